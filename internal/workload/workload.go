// Package workload is the vocabulary shared by infera's data plane and control plane: what a
// revision needs to run (Revision, Container, Probe, Volume), how requests reach it (Route,
// Target) and what runs it (Endpoint). It holds plain values only: no I/O, no goroutines.
//
// The reconciler turns Knative Services into Revisions and Routes; the supervisor runs a
// Revision's replicas as processes and reports their Endpoints; the gateway routes requests
// over Routes to ready Endpoints; the autoscaler reads the gateway's Stats.
package workload

import (
	"fmt"
	"time"
)

// RevisionID names a revision across namespaces: "namespace/name", e.g. "default/llm-00001".
type RevisionID string

// NewRevisionID joins a namespace and a revision name.
func NewRevisionID(namespace, name string) RevisionID {
	return RevisionID(namespace + "/" + name)
}

// Knative's runtime defaults and limits that the data plane applies.
const (
	// DefaultTimeout is Knative's revision-timeout-seconds default.
	DefaultTimeout = 300 * time.Second
	// MaxTimeout is Knative's max-revision-timeout-seconds default.
	MaxTimeout = 600 * time.Second
	// QueueDepthPerConcurrency is Knative's queue-proxy breaker: a queue of 10 x containerConcurrency.
	QueueDepthPerConcurrency = 10
	// AggressiveProbePeriod is how often Knative probes readiness while starting when
	// periodSeconds is 0; AggressiveProbeTimeout bounds each such probe.
	AggressiveProbePeriod  = 50 * time.Millisecond
	AggressiveProbeTimeout = 100 * time.Millisecond
)

// Revision is everything needed to run and serve one immutable revision.
type Revision struct {
	ID            RevisionID
	Namespace     string
	Service       string // K_SERVICE
	Configuration string // K_CONFIGURATION
	Name          string // K_REVISION, e.g. "llm-00001"
	Generation    int64  // the Configuration generation it was created from

	// ContainerConcurrency is the hard limit of in-flight requests per replica; 0 is unlimited.
	ContainerConcurrency int
	// Timeout is timeoutSeconds: a hard deadline for the whole request, queueing included.
	Timeout time.Duration
	// ResponseStartTimeout is responseStartTimeoutSeconds (0: Timeout applies alone).
	ResponseStartTimeout time.Duration
	// IdleTimeout is idleTimeoutSeconds: the longest gap between response bytes (0: none).
	IdleTimeout time.Duration

	Container Container
	Volumes   []Volume

	Annotations map[string]string
	Labels      map[string]string
}

// Container is the one serving container of a revision, with references already resolved.
type Container struct {
	Name       string
	Image      string   // recorded for display and for the image-to-command mapping
	Command    []string // argv[0] and leading arguments; never empty once resolved
	Args       []string
	Env        []EnvVar // resolved values, in order; PORT and K_* are added by the supervisor
	WorkingDir string
	// Port is the containerPort the app listens on inside its own network view; infera
	// assigns a free host port per replica and passes it as PORT, so Port is informational.
	Port int32
	// PortName "h2c" asks for HTTP/2 cleartext end to end (gRPC).
	PortName string

	ReadinessProbe *Probe // nil: Knative's default TCP probe on the port
	LivenessProbe  *Probe
	StartupProbe   *Probe

	// GPUMemGiB is the aliyun.com/gpu-mem limit; 0 when none.
	GPUMemGiB int

	// Runtime runs the container: "process" (the default) or "docker"; RuntimeReason says
	// why that one (an annotation, infera up's --runtime, or auto's choice).
	Runtime       string
	RuntimeReason string
	// ImagePullPolicy is Always, IfNotPresent or Never, Kubernetes' default applied (Always
	// for :latest or no tag, else IfNotPresent).
	ImagePullPolicy string
	// PullSecrets are the .dockerconfigjson documents of the revision's imagePullSecrets, in
	// order. Never logged.
	PullSecrets [][]byte
	// ImageDigest pins the image to what the revision first ran ("repo@sha256:..." or an
	// image ID), recorded in the Revision's status.containerStatuses as Knative's tag
	// resolution does; empty until the first replica ran.
	ImageDigest string
	// FromImageCache: the template asks for images from an ImageCache
	// (k8s.aliyun.com/eci-image-cache: "true"): a cached image is never pulled again.
	FromImageCache bool
	Resources      Resources
	Security       Security
	GPUs           int // nvidia.com/gpu: whole devices
	// GPUCount is aliyun.com/gpu-count: GPUMemGiB spread evenly over that many GPUs.
	GPUCount int
}

// EnvVar is one environment variable. Secret marks values that came from a Secret: they are
// passed to the process and never logged or returned by the API.
// Resources are a container's cpu and memory, as the engine enforces them.
type Resources struct {
	CPULimitMilli   int64
	CPURequestMilli int64
	MemoryLimit     int64 // bytes
}

// Security is what of a container's securityContext maps onto a container engine.
type Security struct {
	RunAsUser                *int64
	RunAsGroup               *int64
	RunAsNonRoot             bool
	ReadOnlyRootFilesystem   bool
	Privileged               bool
	AllowPrivilegeEscalation *bool
	CapAdd, CapDrop          []string
}

type EnvVar struct {
	Name   string
	Value  string
	Secret bool
}

// ProbeHandler is the kind of check a probe makes.
type ProbeHandler int

const (
	ProbeTCP ProbeHandler = iota
	ProbeHTTP
	ProbeExec
	ProbeGRPC
)

// Probe is a Kubernetes probe as Knative runs it. Port 0 means the replica's port.
type Probe struct {
	Handler          ProbeHandler
	Path             string            // HTTP
	Scheme           string            // HTTP: "HTTP" (HTTPS is refused)
	Headers          map[string]string // HTTP
	Command          []string          // exec
	Service          string            // gRPC health service name
	Port             int32
	InitialDelay     time.Duration
	Period           time.Duration // 0: Knative's aggressive probing (every 50 ms) while starting
	Timeout          time.Duration
	SuccessThreshold int
	FailureThreshold int
}

// VolumeKind says where a volume's content comes from.
type VolumeKind int

const (
	VolumeEmptyDir VolumeKind = iota
	VolumeFiles               // secret or configMap: Files are written 0644 in a 0700 tree
	VolumeHostPath            // a directory on this machine: a PVC's infera.dev/host-path or a Dataset's cache
)

// Volume is a volume mounted into the replica at MountPath.
type Volume struct {
	Name      string
	MountPath string
	ReadOnly  bool
	SubPath   string
	Kind      VolumeKind
	HostPath  string            // VolumeHostPath
	Files     map[string][]byte // VolumeFiles: relative path -> content
	Secret    bool              // Files came from a Secret: never logged
}

// Target is one entry of a route's traffic: a share of requests to a revision, and an optional
// tag that also gives the revision its own host.
type Target struct {
	Revision RevisionID
	Percent  int
	Tag      string
}

// Route is how requests reach a service: its host, its traffic split and the OpenAI model
// names it answers to.
type Route struct {
	Namespace string
	Service   string
	Host      string // {service}.{namespace}.{domain}
	Targets   []Target
	Models    []string // the service name plus annotation infera.dev/models
}

// TagHost is the host of a tagged target: {tag}-{service}.{namespace}.{domain}.
func TagHost(tag, service, namespace, domain string) string {
	return fmt.Sprintf("%s-%s.%s.%s", tag, service, namespace, domain)
}

// ServiceHost is the host of a service: {service}.{namespace}.{domain}.
func ServiceHost(service, namespace, domain string) string {
	return fmt.Sprintf("%s.%s.%s", service, namespace, domain)
}

// Endpoint is one ready replica as the gateway sees it.
type Endpoint struct {
	Replica string // unique replica name, e.g. "llm-00001-7f3a"
	Addr    string // host:port on loopback
}

// Stat is what the gateway observed of one revision during one second, Knative's metric:
// the time-weighted average of requests in flight (queued ones included, probes excluded)
// and the number of requests that arrived.
type Stat struct {
	Revision    RevisionID
	Time        time.Time // the end of the second
	Concurrency float64
	Requests    float64
}
