package controller

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/infera-dev/infera/internal/ack"
	"github.com/infera-dev/infera/internal/placement"
	"github.com/infera-dev/infera/internal/workload"
)

func TestParsePools(t *testing.T) {
	tests := []struct {
		name    string
		data    map[string]string
		want    []placement.Pool
		wantErr string
	}{
		{"two pools", map[string]string{
			"own":   "kind: ecs\nlabels: {key2: value2}\ngpus: [0, 1]\ncpu: \"8\"\nmemory: 32Gi\n",
			"burst": "kind: eci\ngpus: [2]\n",
		}, []placement.Pool{
			{Name: "burst", Kind: "eci", GPUs: []int{2}},
			{Name: "own", Kind: "ecs", Labels: map[string]string{"key2": "value2"}, GPUs: []int{0, 1}, CPUMilli: 8000, MemoryBytes: 32 << 30},
		}, ""},
		{"kind defaults to ecs", map[string]string{"p": "labels: {a: b}\n"}, []placement.Pool{{Name: "p", Kind: "ecs", Labels: map[string]string{"a": "b"}}}, ""},
		{"bad kind", map[string]string{"p": "kind: vm\n"}, nil, `pool "p": kind "vm"`},
		{"unknown field", map[string]string{"p": "gpu: [0]\n"}, nil, `pool "p"`},
		{"bad memory", map[string]string{"p": "memory: lots\n"}, nil, `pool "p": memory`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parsePools(tt.data)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v", got)
			}
			for i := range got {
				g, w := got[i], tt.want[i]
				if g.Name != w.Name || g.Kind != w.Kind || g.CPUMilli != w.CPUMilli || g.MemoryBytes != w.MemoryBytes || len(g.GPUs) != len(w.GPUs) || len(g.Labels) != len(w.Labels) {
					t.Errorf("pool %d = %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

func TestUnitsFor(t *testing.T) {
	c := &Controller{}
	article := &ack.ResourcePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "helloworld-go-units", Namespace: "default"},
		Spec: ack.ResourcePolicySpec{
			Selector: map[string]string{"serving.knative.dev/service": "helloworld-go"},
			Units: []ack.Unit{
				{Resource: ack.ResourceECS, NodeSelector: map[string]string{"key2": "value2"}},
				{Resource: ack.ResourceECS, NodeSelector: map[string]string{"key3": "value3"}},
				{Resource: ack.ResourceECI},
			},
		},
	}
	c.policies = []*ack.ResourcePolicy{article}
	rev := workload.Revision{Namespace: "default", Labels: map[string]string{"serving.knative.dev/service": "helloworld-go"}}

	pol, key, pools := c.UnitsFor(rev, []int{0, 1})
	if pol == nil || key != "default/helloworld-go-units" || len(pools) != 1 {
		t.Fatalf("policy %v key %q pools %+v", pol, key, pools)
	}
	local := pools[0]
	if local.Name != "local" || local.Kind != "ecs" || len(local.GPUs) != 2 || local.Labels["key2"] != "value2" || local.Labels["key3"] != "value3" {
		t.Errorf("the machine's pool %+v: want every ecs unit's nodeSelector to match it", local)
	}
	if pol, _, _ := c.UnitsFor(workload.Revision{Namespace: "other", Labels: rev.Labels}, nil); pol != nil {
		t.Error("a policy of another namespace matched")
	}
	if pol, _, _ := c.UnitsFor(workload.Revision{Namespace: "default", Labels: map[string]string{"serving.knative.dev/service": "x"}}, nil); pol != nil {
		t.Error("a revision the selector does not match got the policy")
	}
	c.pools, c.poolsSet = []placement.Pool{{Name: "own", Kind: "ecs"}}, true
	if _, _, pools := c.UnitsFor(rev, nil); len(pools) != 1 || pools[0].Name != "own" {
		t.Errorf("declared pools not used: %+v", pools)
	}
}
