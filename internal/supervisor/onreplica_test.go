package supervisor

import (
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/infera-dev/infera/internal/testutil"
	"github.com/infera-dev/infera/internal/workload"
)

// TestOnReplicaReportsStartAndReady: OnReplica hears of the process start and then of Ready,
// with Created <= Started <= ReadySince on the injected clock, before the replica's endpoint
// is sent to the gateway; Replicas shows the same ReadySince.
func TestOnReplicaReportsStartAndReady(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		probe *workload.Probe
	}{
		{"default TCP probe", nil},
		{"HTTP aggressive probe", &workload.Probe{Handler: workload.ProbeHTTP, Path: "/ready"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			type seen struct {
				st       ReplicaStatus
				endpoint bool // the gateway had its endpoint when it was reported
			}
			var mu sync.Mutex
			var reports []seen
			var ts *testSup
			ts = newTestSup(t, Config{Clock: testutil.NewFakeClock(fakeClockStart), OnReplica: func(st ReplicaStatus) {
				inGateway := slices.ContainsFunc(ts.gw.endpoints(st.Revision), func(e workload.Endpoint) bool { return e.Replica == st.Name })
				mu.Lock()
				defer mu.Unlock()
				reports = append(reports, seen{st, inGateway})
			}})
			rev := testRev("onrep" + strconv.Itoa(i) + "-00001")
			rev.Container.ReadinessProbe = tt.probe
			reps := ts.waitReady(t, rev, 1)

			mu.Lock()
			got := slices.Clone(reports)
			mu.Unlock()
			if len(got) != 2 {
				t.Fatalf("reports %+v, want the process start and Ready", got)
			}
			start, ready := got[0], got[1]
			if start.st.State != Starting || start.st.PID == 0 || start.st.Started.IsZero() || !start.st.ReadySince.IsZero() {
				t.Errorf("process start reported as %+v", start.st)
			}
			if ready.st.State != Ready || ready.st.ReadySince.IsZero() || ready.st.Started != start.st.Started {
				t.Errorf("Ready reported as %+v", ready.st)
			}
			if c, s, r := ready.st.Created, ready.st.Started, ready.st.ReadySince; !c.Equal(fakeClockStart) || s.Before(c) || r.Before(s) {
				t.Errorf("times created %v started %v ready %v: want created at the clock's start, in that order", c, s, r)
			}
			if start.endpoint || ready.endpoint {
				t.Error("reported after the endpoint had reached the gateway")
			}
			if reps[0].ReadySince != ready.st.ReadySince || reps[0].Name != ready.st.Name {
				t.Errorf("Replicas shows %+v, reported %+v", reps[0], ready.st)
			}
		})
	}
}
