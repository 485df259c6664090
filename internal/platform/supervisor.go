package platform

import (
	"fmt"
	"io"
	"strings"

	"github.com/infera-dev/infera/internal/adminapi"
	"github.com/infera-dev/infera/internal/coldstart"
	"github.com/infera-dev/infera/internal/controller"
	"github.com/infera-dev/infera/internal/gateway"
	"github.com/infera-dev/infera/internal/supervisor"
	"github.com/infera-dev/infera/internal/workload"
)

// supervisorAdapter shows the supervisor to the controller and the admin API, with each
// replica's in-flight requests from the gateway.
type supervisorAdapter struct {
	s  *supervisor.Supervisor
	gw *gateway.Gateway
}

func (a supervisorAdapter) Scale(rev workload.Revision, n int) { a.s.Scale(rev, n) }
func (a supervisorAdapter) Remove(id workload.RevisionID)      { a.s.Remove(id) }

func (a supervisorAdapter) Status(id workload.RevisionID) controller.RevisionStatus {
	st := a.s.Status(id)
	return controller.RevisionStatus{Ready: st.Ready, Running: st.Live, Failed: st.Failed, Reason: st.Reason, Message: st.Message,
		ImageDigest: st.ImageDigest, Unschedulable: st.Unschedulable, Events: st.Events}
}

func (a supervisorAdapter) Replicas() []adminapi.Replica {
	var out []adminapi.Replica
	for _, r := range a.s.Replicas() {
		rep := adminapi.Replica{
			Name: r.Name, Revision: string(r.Revision), PID: r.PID, State: string(r.State),
			Restarts: r.Restarts, Started: r.Started, LastExit: r.LastExit,
			InFlight: a.gw.InFlight(r.Revision, r.Name),
			Runtime:  r.Runtime, Image: r.Image, ImageSource: r.ImageSource, Reason: r.Reason, Progress: r.Progress,
			GPUs: r.GPUs, GPUMemory: r.GPUMemory, Unit: r.Unit, Pool: r.Pool,
		}
		if r.State == supervisor.Pending || strings.HasPrefix(r.Message, "stopped to hand") {
			rep.Message = r.Message
		}
		if r.ImagePull > 0 {
			rep.ImagePullMs = r.ImagePull.Milliseconds()
		}
		if r.Port > 0 {
			rep.Addr = fmt.Sprintf("127.0.0.1:%d", r.Port)
		}
		if r.Message != "" && rep.LastExit != "" {
			rep.LastExit += ": " + r.Message
		}
		out = append(out, rep)
	}
	return out
}

func (a supervisorAdapter) Logs(replica string) (io.ReadCloser, error) { return a.s.Logs(replica) }

// replicaTimes is what the cold start tracker needs of a replica's status.
func replicaTimes(st supervisor.ReplicaStatus) coldstart.Replica {
	return coldstart.Replica{Revision: st.Revision, Name: st.Name, Created: st.Created, ImageReady: st.ImageReady, Started: st.Started, Ready: st.ReadySince}
}

// coldStartProgress says where a revision's cold start is, for a held request that asked to
// see it: the phase (as infera_cold_start_seconds names it) and what it waits for.
func coldStartProgress(id workload.RevisionID, revs []adminapi.RevisionView, reps []supervisor.ReplicaStatus) string {
	for _, r := range revs {
		if workload.NewRevisionID(r.Namespace, r.Name) == id && r.State == adminapi.StatePending && r.Reason != "Unschedulable" {
			return "phase=dataset " + r.Message
		}
	}
	best := "phase=placement no replica yet"
	for _, r := range reps {
		if r.Revision != id {
			continue
		}
		switch {
		case r.State == supervisor.Pending:
			best = "phase=placement " + r.Message
		case r.Progress != "":
			return "phase=image " + r.Progress
		case r.State == supervisor.Ready:
			return "phase=first_byte replica " + r.Name + " ready"
		case r.PID > 0:
			return "phase=readiness replica " + r.Name + " started, waiting for its readiness probe"
		case r.State == supervisor.CrashLoopBackOff || r.State == supervisor.ImagePullBackOff:
			best = "phase=process_start " + string(r.State) + ": " + r.LastExit
		default:
			best = "phase=process_start replica " + r.Name + " starting"
		}
	}
	return best
}
