package supervisor

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/infera-dev/infera/internal/placement"
	"github.com/infera-dev/infera/internal/workload"
)

// declared80x2 is a declared inventory (no real GPU): two devices of 80 GiB.
var declared80x2 = []placement.GPU{
	{Index: 0, Name: "declared-0", MemoryBytes: 80 * placement.GiB, Declared: true},
	{Index: 1, Name: "declared-1", MemoryBytes: 80 * placement.GiB, Declared: true},
}

func gpuRev(name string, gib int, annotations map[string]string) workload.Revision {
	rev := testRev(name)
	rev.Container.GPUMemGiB = gib
	rev.Annotations = annotations
	return rev
}

func envOf(t *testing.T, port int) map[string]string {
	t.Helper()
	code, body := get(t, port, "/env")
	if code != 200 {
		t.Fatalf("GET /env = %d", code)
	}
	env := map[string]string{}
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		t.Fatal(err)
	}
	return env
}

// TestGPUSharesDeclaredInventory: three 30 GiB services on a declared 80Gi,80Gi inventory land
// 2 + 1 (bin-packing: the fullest GPU that fits), each with ACK's gpushare env; a fourth of
// 60 GiB is Pending saying which GPU has how much free, and is placed the moment an idle one
// scales to zero.
func TestGPUSharesDeclaredInventory(t *testing.T) {
	ts := newTestSup(t, Config{GPUs: declared80x2})
	var gpuOf []int
	for _, name := range []string{"a-00001", "b-00001", "c-00001"} {
		r := ts.waitReady(t, gpuRev(name, 30, nil), 1)[0]
		if len(r.GPUs) != 1 || r.GPUMemory != 30*placement.GiB {
			t.Fatalf("%s holds %v (%d bytes)", name, r.GPUs, r.GPUMemory)
		}
		gpuOf = append(gpuOf, r.GPUs[0])
		env := envOf(t, r.Port)
		idx := string(rune('0' + r.GPUs[0]))
		for k, want := range map[string]string{
			"NVIDIA_VISIBLE_DEVICES": idx, "CUDA_VISIBLE_DEVICES": idx, "ALIYUN_COM_GPU_MEM_IDX": idx,
			"ALIYUN_COM_GPU_MEM_POD": "30", "ALIYUN_COM_GPU_MEM_CONTAINER": "30", "ALIYUN_COM_GPU_MEM_DEV": "80",
		} {
			if env[k] != want {
				t.Errorf("%s: %s=%q, want %q", name, k, env[k], want)
			}
		}
	}
	if gpuOf[0] != gpuOf[1] || gpuOf[2] == gpuOf[0] {
		t.Errorf("GPUs %v: want the first two packed on one GPU and the third on the other", gpuOf)
	}

	// a and b are busy: no hand-off for d, which waits, saying why.
	for _, r := range append(ts.replicasOf("default/a-00001"), ts.replicasOf("default/b-00001")...) {
		ts.gw.setInFlight(r.Name, 1)
	}
	c := ts.replicasOf("default/c-00001")[0]
	ts.gw.setInFlight(c.Name, 1)
	d := gpuRev("d-00001", 60, nil)
	ts.Scale(d, 1)
	ts.waitFor(t, "d pending", func() bool {
		st := ts.Status(d.ID)
		return strings.Contains(st.Unschedulable, "0/2 GPUs fit 60 GiB") && strings.Contains(st.Unschedulable, "20 GiB free of 80 GiB") &&
			strings.Contains(st.Unschedulable, "50 GiB free of 80 GiB")
	})
	if reps := ts.replicasOf(d.ID); len(reps) != 1 || reps[0].State != Pending || reps[0].Reason != ReasonUnschedulable || reps[0].PID != 0 {
		t.Fatalf("d's replica %+v, want Pending with no process", reps)
	}
	if _, n := ts.Handoffs(); n != 0 {
		t.Fatalf("%d hand-offs while every holder is busy", n)
	}
	// c scales to zero: d is placed on its GPU at once.
	ts.Scale(gpuRev("c-00001", 30, nil), 0)
	ts.waitFor(t, "d ready", func() bool { return ts.Status(d.ID).Ready == 1 })
	if r := ts.replicasOf(d.ID)[0]; len(r.GPUs) != 1 || r.GPUs[0] != gpuOf[2] {
		t.Errorf("d on %v, want GPU %d (c's)", r.GPUs, gpuOf[2])
	}
	if st := ts.Status(d.ID); st.Unschedulable != "" {
		t.Errorf("placed, still unschedulable: %q", st.Unschedulable)
	}
}

// TestGPUHandoffDeclaredInventory: a cold revision that fits nowhere gets the GPU of the least
// recently used idle replica, which is drained and stopped and not replaced until a request
// for it comes (Demand); a revision at its min-scale, one opted out, and one with a request in
// flight are never handed off.
func TestGPUHandoffDeclaredInventory(t *testing.T) {
	one := []placement.GPU{{Index: 0, Name: "declared-0", MemoryBytes: 80 * placement.GiB, Declared: true}}
	tests := []struct {
		name     string
		holder   map[string]string // its annotations
		inFlight int
		handoff  bool
		why      string // in the pending message when no hand-off
	}{
		{"idle, above min-scale: handed off", nil, 0, true, ""},
		{"request in flight", nil, 1, false, "in flight"},
		{"at min-scale", map[string]string{"autoscaling.knative.dev/min-scale": "1"}, 0, false, "min-scale"},
		{"opted out", map[string]string{AnnotationGPUEvictable: "false"}, 0, false, "evictable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestSup(t, Config{GPUs: one})
			hold := gpuRev("hold-00001", 60, tt.holder)
			h := ts.waitReady(t, hold, 1)[0]
			ts.gw.setInFlight(h.Name, tt.inFlight)
			cold := gpuRev("cold-00001", 60, nil)
			ts.Scale(cold, 1)
			if !tt.handoff {
				ts.waitFor(t, "cold pending with the reason", func() bool {
					return strings.Contains(strings.ToLower(ts.Status(cold.ID).Unschedulable), tt.why)
				})
				if ts.Status(hold.ID).Ready != 1 {
					t.Fatal("the holder was stopped")
				}
				return
			}
			ts.waitFor(t, "cold ready on the holder's GPU", func() bool { return ts.Status(cold.ID).Ready == 1 })
			if st := ts.Status(hold.ID); st.Actual != 0 || st.Desired != 1 {
				t.Fatalf("holder after the hand-off %+v: want 0 running while its desired stays 1", st)
			}
			hs, n := ts.Handoffs()
			if n != 1 || len(hs) != 1 || hs[0].Evicted[0] != h.Name || hs[0].ForRevision != cold.ID {
				t.Fatalf("hand-offs %+v (%d)", hs, n)
			}
			if ev := ts.Status(hold.ID).Events; len(ev) != 1 || !strings.Contains(ev[0], "GPU hand-off: stopped idle "+h.Name) {
				t.Errorf("holder's events %q", ev)
			}
			// The GPU went from the holder to the cold one, in that order.
			events := strings.Join(ts.gw.eventList(), "\n")
			if !strings.Contains(events, "waitidle-start "+h.Name) {
				t.Errorf("the holder was not drained:\n%s", events)
			}
			// A request for the holder: it wants its GPU back, and gets it from the now idle cold one.
			ts.Demand(hold.ID)
			ts.waitFor(t, "the holder back", func() bool { return ts.Status(hold.ID).Ready == 1 })
			if _, n := ts.Handoffs(); n != 2 {
				t.Errorf("%d hand-offs after the switch back, want 2: one per switch", n)
			}
			if st := ts.Status(cold.ID); st.Actual != 0 {
				t.Errorf("cold still runs %d", st.Actual)
			}
		})
	}
}

// TestGPUPendingWithoutInventory: a replica asking for GPUs on a machine with none waits,
// saying so, and never starts.
func TestGPUPendingWithoutInventory(t *testing.T) {
	ts := newTestSup(t, Config{})
	rev := gpuRev("g-00001", 10, nil)
	ts.Scale(rev, 1)
	ts.waitFor(t, "pending", func() bool { return strings.Contains(ts.Status(rev.ID).Unschedulable, "0/0 GPUs") })
	if reps := ts.replicasOf(rev.ID); len(reps) != 1 || reps[0].State != Pending {
		t.Fatalf("%+v", reps)
	}
}
