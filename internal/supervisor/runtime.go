package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/infera-dev/infera/internal/workload"
)

// Runtime starts a replica's program: a process on this machine, or a container through an
// engine. It only starts, signals and waits; the lifecycle around it (probes, readiness,
// drain, grace, back-off, logs, scale-down choice) is the supervisor's and the same for every
// runtime.
type Runtime interface {
	// Start starts one run of a replica. ctx ends when the replica is stopped while it starts
	// (a long image pull, say). An error the runtime can name the way the kubelet does is a
	// *StartError.
	Start(ctx context.Context, l Launch) (Instance, error)
}

// Instance is one run of a replica's program.
type Instance interface {
	// PID is the main process's pid on this machine (0 when unknown).
	PID() int
	// Done is closed once the program has exited and its output is read.
	Done() <-chan struct{}
	// ExitDesc says how it ended ("exit status 1", "signal: killed"); it waits for Done.
	ExitDesc() string
	// Terminate asks the program to stop (SIGTERM, or the image's stop signal).
	Terminate()
	// Kill ends it at once (SIGKILL).
	Kill()
	// Exec runs argv beside the program, where it sees what the program sees (its sandbox,
	// its container), output to out; a non-zero exit status is an error.
	Exec(ctx context.Context, argv []string, out io.Writer) error
}

// ImageRunner is implemented by instances that run an image: what they run, pinned.
type ImageRunner interface {
	// ImageRef is the image the instance runs, as a digest reference ("repo@sha256:...") or
	// an image ID when the image has no registry digest.
	ImageRef() string
	// ContainerID is the engine's id of the container.
	ContainerID() string
	// ImageSource says where the image came from: "present", "pulled", "cache".
	ImageSource() string
	// PullDuration is how long the start spent making the image present.
	PullDuration() time.Duration
}

// Launch is what a runtime needs to start a replica.
type Launch struct {
	Replica  string
	Revision workload.Revision
	Port     int
	// Command and Args are the container's, with $(VAR) expanded. An empty Command means the
	// image's entrypoint (and an empty Args then the image's cmd), as in Kubernetes.
	Command, Args []string
	// Env is the container's environment and Knative's (PORT, K_SERVICE, K_CONFIGURATION,
	// K_REVISION), last value of each name winning; a process runtime adds its own
	// environment in front.
	Env []string
	// GPUs are the devices the replica was placed on, as NVIDIA names them (UUIDs, or
	// indices for a declared inventory); its env already says so (NVIDIA_VISIBLE_DEVICES,
	// ACK's ALIYUN_COM_GPU_MEM_*). A container runtime requests exactly these.
	GPUs []string
	// Binds are the replica's volumes, each backed by a directory or file on this machine.
	Binds []Bind
	// Log receives the program's stdout and stderr.
	Log io.Writer
	// Progress says, while Start runs, what it is doing ("pulling image ...: 12 MiB of 40
	// MiB"); it returns quickly.
	Progress func(msg string)
}

// Bind is a volume of a replica: Source on this machine appears at Target.
type Bind struct {
	Volume   string
	Source   string
	Target   string
	ReadOnly bool
}

// Runtime names.
const (
	RuntimeProcess = "process"
	RuntimeDocker  = "docker"
)

// Reasons a StartError names, as the kubelet names a waiting container.
const (
	ReasonErrImagePull               = "ErrImagePull"
	ReasonImagePullBackOff           = "ImagePullBackOff"
	ReasonCreateContainerConfigError = "CreateContainerConfigError"
	ReasonCreateContainerError       = "CreateContainerError"
	ReasonRunContainerError          = "RunContainerError"
)

// StartError is a start that failed for a reason the kubelet has a name for.
type StartError struct {
	Reason string // ReasonErrImagePull, ...
	Err    error
}

func (e *StartError) Error() string { return fmt.Sprintf("%s: %v", e.Reason, e.Err) }
func (e *StartError) Unwrap() error { return e.Err }

// startReason is the kubelet reason of a start error, "" when it has none.
func startReason(err error) string {
	var se *StartError
	if errors.As(err, &se) {
		return se.Reason
	}
	return ""
}

// runtimeFor picks the runtime a revision names (workload.Container.Runtime; "" is process).
func (s *Supervisor) runtimeFor(rev workload.Revision) (Runtime, error) {
	name := rev.Container.Runtime
	if name == "" {
		name = RuntimeProcess
	}
	if rt, ok := s.cfg.Runtimes[name]; ok && rt != nil {
		return rt, nil
	}
	if name == RuntimeProcess {
		return processRuntime{s}, nil
	}
	return nil, fmt.Errorf("runtime %q is not available in this infera (no container engine was found when it started; see `infera up --runtime`)", name)
}
