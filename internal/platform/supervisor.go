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
