package platform

import (
	"testing"

	"github.com/infera-dev/infera/internal/adminapi"
	"github.com/infera-dev/infera/internal/workload"

	"github.com/infera-dev/infera/internal/gpu"
	"github.com/infera-dev/infera/internal/supervisor"
)

// TestAccount: NVML's per-process memory (here as a fake reading: no GPU on this machine) summed
// over each replica's processes, and the replicas over their share.
func TestAccount(t *testing.T) {
	procs := []gpu.ProcessMemory{
		{PID: 10, Device: 0, Bytes: 20 << 30}, {PID: 11, Device: 0, Bytes: 5 << 30}, // a: its process and a child
		{PID: 20, Device: 1, Bytes: 31 << 30}, // b: over its 30 GiB
		{PID: 99, Device: 1, Bytes: 1 << 30},  // nobody's
	}
	holders := []supervisor.GPUHolder{
		{Replica: "a", PIDs: []int{10, 11}, Reserved: 30 << 30},
		{Replica: "b", PIDs: []int{20}, Reserved: 30 << 30, Enforce: "kill"},
		{Replica: "c", PIDs: []int{30}, Reserved: 10 << 30},
	}
	u := account(procs, holders)
	if u.used["a"] != 25<<30 || u.used["b"] != 31<<30 || u.used["c"] != 0 {
		t.Errorf("used %v", u.used)
	}
	if len(u.over) != 1 || u.over[0].Replica != "b" || u.over[0].Enforce != "kill" {
		t.Errorf("over %+v, want b alone", u.over)
	}
}

func TestColdStartProgress(t *testing.T) {
	id := workload.RevisionID("default/llm-00001")
	tests := []struct {
		name string
		revs []adminapi.RevisionView
		reps []supervisor.ReplicaStatus
		want string
	}{
		{"dataset", []adminapi.RevisionView{{Namespace: "default", Name: "llm-00001", State: adminapi.StatePending, Reason: "DatasetNotReady", Message: "dataset default/m is not cached yet"}}, nil, "phase=dataset dataset default/m is not cached yet"},
		{"no replica", nil, nil, "phase=placement no replica yet"},
		{"gpu", nil, []supervisor.ReplicaStatus{{Revision: id, State: supervisor.Pending, Message: "0/1 GPUs fit"}}, "phase=placement 0/1 GPUs fit"},
		{"pull", nil, []supervisor.ReplicaStatus{{Revision: id, State: supervisor.Starting, Progress: "pulling image a: 1 MiB"}}, "phase=image pulling image a: 1 MiB"},
		{"readiness", nil, []supervisor.ReplicaStatus{{Revision: id, Name: "r", State: supervisor.Starting, PID: 7}}, "phase=readiness replica r started, waiting for its readiness probe"},
		{"another revision's replica", nil, []supervisor.ReplicaStatus{{Revision: "default/x-00001", State: supervisor.Ready}}, "phase=placement no replica yet"},
	}
	for _, tt := range tests {
		if got := coldStartProgress(id, tt.revs, tt.reps); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}
