package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestArticleResourcePolicy applies the article's ResourcePolicy as it is, with pools of this
// machine declared in ConfigMap infera-system/pools (two ECS pools matching its units'
// nodeSelectors and an ECI pool for bursts) and its first unit's max lowered from 10 to 1
// so that three replicas show the order: one in unit 0, one in unit 1, one in unit 2 (eci),
// each in its pool; describe shows each replica's unit.
func TestArticleResourcePolicy(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "examples", "resourcepolicy", "resourcepolicy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	policy := string(b)
	if !strings.Contains(policy, "max: 10") {
		t.Fatal("examples/resourcepolicy changed: no max: 10")
	}
	policy = strings.Replace(policy, "max: 10", "max: 1", 1)
	policy = strings.Replace(policy, "    - resource: ecs\n      nodeSelector:\n        key3: value3\n", "    - resource: ecs\n      max: 1\n      nodeSelector:\n        key3: value3\n", 1)
	pools := `apiVersion: v1
kind: ConfigMap
metadata: {name: pools, namespace: infera-system}
data:
  ecs-a: "kind: ecs\nlabels: {key2: value2}\n"
  ecs-b: "kind: ecs\nlabels: {key3: value3}\n"
  burst: "kind: eci\n"
`
	svc := appService("helloworld-go", map[string]string{"autoscaling.knative.dev/min-scale": "3"}, nil, "", "")
	u := startUp(t, pools+"---\n"+policy+"---\n"+svc)
	u.waitReady("helloworld-go")
	eventually(t, 60*time.Second, "three replicas, one per unit", func() (bool, string) {
		seen := map[int]string{}
		for _, r := range u.replicas(t) {
			if r.State == "Ready" {
				seen[r.Unit] = r.Pool
			}
		}
		return len(seen) == 3 && seen[0] == "ecs-a" && seen[1] == "ecs-b" && seen[2] == "burst", fmt.Sprint(seen)
	})
	out, code := u.infera(t, "", "describe", "service", "helloworld-go")
	if code != 0 || !strings.Contains(out, "UNIT") || !strings.Contains(out, "2 (burst)") {
		t.Errorf("describe:\n%s", out)
	}
}
