package supervisor

import (
	"strings"
	"testing"

	"github.com/infera-dev/infera/internal/ack"
	"github.com/infera-dev/infera/internal/placement"
	"github.com/infera-dev/infera/internal/workload"
)

func i32(v int32) *int32 { return &v }

// TestResourcePolicyUnitsInOrderAndReverseScaleIn: replicas of a revision covered by a
// ResourcePolicy fill its units in order up to each unit's max, wait (Pending, each unit's
// reason) when every unit is full, and scale in from the last unit first, newest first.
func TestResourcePolicyUnitsInOrderAndReverseScaleIn(t *testing.T) {
	policy := &ack.ResourcePolicySpec{
		Selector: map[string]string{"serving.knative.dev/service": "burst"},
		Units: []ack.Unit{
			{Resource: ack.ResourceECS, Max: i32(2), NodeSelector: map[string]string{"tier": "base"}},
			{Resource: ack.ResourceECI, Max: i32(1)},
		},
	}
	pools := []placement.Pool{
		{Name: "base", Kind: placement.KindECS, Labels: map[string]string{"tier": "base"}},
		{Name: "burst", Kind: placement.KindECI},
	}
	units := func(rev workload.Revision) (*ack.ResourcePolicySpec, string, []placement.Pool) {
		if rev.Service != "burst" {
			return nil, "", nil
		}
		return policy, "default/burst-units", pools
	}
	ts := newTestSup(t, Config{Units: units})
	rev := testRev("burst-00001")
	rev.Labels = map[string]string{"serving.knative.dev/service": "burst"}

	unitsOf := func() map[string]int {
		out := map[string]int{}
		for _, r := range ts.replicasOf(rev.ID) {
			if r.State != Terminating {
				out[r.Name] = r.Unit
			}
		}
		return out
	}
	count := func(u int) int {
		n := 0
		for _, x := range unitsOf() {
			if x == u {
				n++
			}
		}
		return n
	}
	ts.waitReady(t, rev, 2)
	if count(0) != 2 {
		t.Fatalf("units %v: want both in unit 0 (ecs, max 2)", unitsOf())
	}
	ts.waitReady(t, rev, 3)
	if count(0) != 2 || count(1) != 1 {
		t.Fatalf("units %v: want the third in unit 1 (eci)", unitsOf())
	}
	for _, r := range ts.replicasOf(rev.ID) {
		if want := map[int]string{0: "base", 1: "burst"}[r.Unit]; r.Pool != want {
			t.Errorf("%s in unit %d, pool %q", r.Name, r.Unit, r.Pool)
		}
	}
	// A fourth: every unit is full, so it waits and says why.
	ts.Scale(rev, 4)
	ts.waitFor(t, "the fourth pending", func() bool {
		st := ts.Status(rev.ID).Unschedulable
		return strings.Contains(st, "no unit takes replica") && strings.Contains(st, "unit 0") && strings.Contains(st, "unit 1")
	})
	// Scale in: the pending one and unit 1 go first, then the newest of unit 0.
	newest0 := ""
	for _, r := range ts.replicasOf(rev.ID) { // by creation
		if r.Unit == 0 {
			newest0 = r.Name
		}
	}
	ts.Scale(rev, 2)
	ts.waitFor(t, "down to unit 0's two", func() bool { return len(unitsOf()) == 2 && count(0) == 2 && ts.Status(rev.ID).Live == 2 })
	ts.Scale(rev, 1)
	ts.waitFor(t, "down to one", func() bool { return ts.Status(rev.ID).Live == 1 })
	if _, ok := unitsOf()[newest0]; ok {
		t.Errorf("scale-in kept %s, the newest of unit 0: %v", newest0, unitsOf())
	}
	// A revision the policy does not cover is in no unit.
	other := testRev("other-00001")
	if r := ts.waitReady(t, other, 1)[0]; r.Unit != -1 {
		t.Errorf("uncovered replica in unit %d", r.Unit)
	}
}
