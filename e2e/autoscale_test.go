package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/adminapi"
)

const fastAutoscaler = `apiVersion: v1
kind: ConfigMap
metadata:
  name: config-autoscaler
  namespace: knative-serving
data:
  stable-window: "6s"
  scale-to-zero-grace-period: "2s"
---
`

// load runs n clients sending requests to host until the returned stop is called; stop returns
// the number of non-200 answers.
func (u *up) load(t *testing.T, n int, host, path string) (stop func() int) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	bad := 0
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				resp, err := u.do(http.MethodGet, host, path, nil)
				if err != nil {
					mu.Lock()
					bad++
					mu.Unlock()
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					mu.Lock()
					bad++
					mu.Unlock()
				}
			}
		}()
	}
	return func() int {
		cancel()
		wg.Wait()
		return bad
	}
}

func (u *up) revision(t testing.TB, name string) (adminapi.RevisionView, bool) {
	for _, r := range u.revisions(t) {
		if r.Name == name {
			return r, true
		}
	}
	return adminapi.RevisionView{}, false
}

func TestAutoscalePanicThenScaleToZero(t *testing.T) {
	u := startUp(t, fastAutoscaler+appService("burst", nil, nil, "containerConcurrency: 5\n", ""))
	u.waitReady("burst")
	stop := u.load(t, 50, "burst.default.localhost", "/sleep?d=500ms")
	sawPanic := false
	eventually(t, 30*time.Second, "panic scale-up to about 10 replicas", func() (bool, string) {
		r, ok := u.revision(t, "burst-00001")
		if !ok || r.Decision == nil {
			return false, "no decision"
		}
		sawPanic = sawPanic || r.Decision.Panic
		return sawPanic && r.Decision.Desired >= 8 && r.ReadyReplicas >= 8, fmt.Sprintf("%+v ready %d", *r.Decision, r.ReadyReplicas)
	})
	if bad := stop(); bad != 0 {
		t.Errorf("%d requests failed under the burst", bad)
	}
	r, _ := u.revision(t, "burst-00001")
	if r.Decision.Desired > 15 {
		t.Errorf("desired %d for 50 clients at containerConcurrency 5 (target 5 x 0.7: at most ceil(50/3.5) = 15)", r.Decision.Desired)
	}
	eventually(t, 60*time.Second, "scale to zero after stable window and grace", func() (bool, string) {
		r, _ := u.revision(t, "burst-00001")
		var left []string
		for _, rep := range u.replicas(t) {
			if strings.HasSuffix(rep.Revision, "/burst-00001") {
				left = append(left, fmt.Sprintf("%s pid %d %s", rep.Name, rep.PID, rep.State))
			}
		}
		return r.Decision != nil && r.Decision.Desired == 0 && len(left) == 0, fmt.Sprintf("%+v replicas %v", r.Decision, left)
	})
	// And back from zero on the next request.
	if code, body := u.get(t, "burst.default.localhost", "/"); code != 200 || strings.TrimSpace(body) != "burst-00001" {
		t.Errorf("after scale to zero: %d %q", code, body)
	}
}

func TestAutoscaleMinAndMaxScale(t *testing.T) {
	u := startUp(t, fastAutoscaler+appService("bounded", map[string]string{
		"autoscaling.knative.dev/min-scale": "1",
		"autoscaling.knative.dev/max-scale": "2",
	}, nil, "containerConcurrency: 2\n", ""))
	u.waitReady("bounded")
	stop := u.load(t, 20, "bounded.default.localhost", "/sleep?d=300ms")
	eventually(t, 30*time.Second, "capped at max-scale", func() (bool, string) {
		r, _ := u.revision(t, "bounded-00001")
		if r.Decision == nil {
			return false, "no decision"
		}
		if r.Decision.Desired > 2 || r.RunningReplicas > 2 {
			t.Fatalf("max-scale 2 exceeded: %+v running %d", *r.Decision, r.RunningReplicas)
		}
		return r.Decision.Desired == 2 && r.ReadyReplicas == 2, fmt.Sprintf("%+v", *r.Decision)
	})
	stop()
	// After the load, min-scale keeps one replica warm: the decider itself wants zero (its stable
	// window has seen no load) while the bound holds the revision at one ready replica.
	eventually(t, 30*time.Second, "decider at zero, held at min-scale", func() (bool, string) {
		r, _ := u.revision(t, "bounded-00001")
		return r.Decision.DeciderDesired == 0 && r.Decision.Desired == 1 && r.ReadyReplicas == 1 && r.RunningReplicas == 1,
			fmt.Sprintf("%+v ready %d running %d", *r.Decision, r.ReadyReplicas, r.RunningReplicas)
	})
}
