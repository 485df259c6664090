package adminapi

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/infera-dev/infera/internal/manifest"
	"github.com/infera-dev/infera/internal/workload"
)

// ServiceView is a Service as `infera get services` and `describe` show it.
type ServiceView struct {
	Namespace     string          `json:"namespace"`
	Name          string          `json:"name"`
	URL           string          `json:"url"`
	Models        []string        `json:"models,omitempty"`
	Generation    int64           `json:"generation"`
	LatestCreated string          `json:"latestCreatedRevision,omitempty"`
	LatestReady   string          `json:"latestReadyRevision,omitempty"`
	Ready         string          `json:"ready"` // True, False, Unknown
	Reason        string          `json:"reason,omitempty"`
	Message       string          `json:"message,omitempty"`
	Traffic       []TrafficView   `json:"traffic,omitempty"`
	Conditions    []ConditionView `json:"conditions,omitempty"`
}

// TrafficView is one resolved traffic target.
type TrafficView struct {
	Revision       string `json:"revision"`
	Percent        int64  `json:"percent"`
	Tag            string `json:"tag,omitempty"`
	URL            string `json:"url,omitempty"`
	LatestRevision bool   `json:"latestRevision,omitempty"`
}

// ConditionView is a Knative status condition.
type ConditionView struct {
	Type    string    `json:"type"`
	Status  string    `json:"status"`
	Reason  string    `json:"reason,omitempty"`
	Message string    `json:"message,omitempty"`
	Since   time.Time `json:"since,omitzero"`
}

// RevisionView is a Revision with what runs it and what the scaler decided.
type RevisionView struct {
	Namespace            string `json:"namespace"`
	Name                 string `json:"name"`
	Service              string `json:"service"`
	Generation           string `json:"configurationGeneration"`
	Image                string `json:"image,omitempty"`
	ContainerConcurrency int64  `json:"containerConcurrency"`
	Routed               bool   `json:"routed"`
	Ready                string `json:"ready"`
	Reason               string `json:"reason,omitempty"`
	Message              string `json:"message,omitempty"`
	// State is the controller's account of the revision: Running (replicas wanted and
	// started by the supervisor), Pending (waiting for something named in Reason and Message;
	// it starts by itself once that is there), Failed (a user must change something), or
	// Retired (not routed and not latest: no replicas).
	State           string `json:"state"`
	ReadyReplicas   int    `json:"readyReplicas"`
	RunningReplicas int    `json:"runningReplicas"`
	// DatasetMode is how a running revision's replicas got its Datasets: lazy (a lazy FUSE
	// mount of a dataset still being fetched), prefetch (infera.dev/dataset-mode: prefetch:
	// started once cached whole) or in-place (cached whole already); "" without Datasets.
	DatasetMode string `json:"datasetMode,omitempty"`
	// Runtime runs its replicas (process or docker) and RuntimeReason says why; ImageDigest is
	// the image its replicas run, pinned when the first one ran (status.containerStatuses).
	Runtime       string `json:"runtime,omitempty"`
	RuntimeReason string `json:"runtimeReason,omitempty"`
	ImageDigest   string `json:"imageDigest,omitempty"`
	// Events are the GPU hand-offs the revision took part in, oldest first.
	Events   []string      `json:"events,omitempty"`
	Decision *DecisionView `json:"decision,omitempty"`
	// LastColdStart is the revision's last cold start: a replica started while a request
	// waited for a revision with no ready replica, or its first start; nil before any.
	LastColdStart *ColdStartView  `json:"lastColdStart,omitempty"`
	Conditions    []ConditionView `json:"conditions,omitempty"`
}

// ColdStartView is one cold start, phase by phase in milliseconds; the phases add up to
// TotalMs. Each is a phase label of the metric infera_cold_start_seconds.
type ColdStartView struct {
	At      time.Time `json:"at"`      // when it began: the Dataset wait, else the poke or the start decision
	Trigger string    `json:"trigger"` // "request" (scale from zero) or "first-start"
	Replica string    `json:"replica"` // the replica that was started
	// DatasetMs (dataset): Pending on a Dataset until it could start; only when it had to wait.
	DatasetMs *float64 `json:"datasetMs,omitempty"`
	// PlacementMs (placement): the poke (the held request's arrival) or the start decision, to
	// the replica created.
	PlacementMs float64 `json:"placementMs"`
	// ImageMs (image): the replica created to its image present (a pull, or the engine or an
	// ImageCache having it); only for replicas that run images.
	ImageMs *float64 `json:"imageMs,omitempty"`
	// ProcessStartMs (process_start): the replica created to its process running.
	ProcessStartMs float64 `json:"processStartMs"`
	// ReadinessMs (readiness): the process running to the replica's first Ready.
	ReadinessMs float64 `json:"readinessMs"`
	// FirstByteMs (first_byte): Ready to the held request's first response byte; only when a
	// request was held.
	FirstByteMs *float64 `json:"firstByteMs,omitempty"`
	TotalMs     float64  `json:"totalMs"`
}

// Revision states (RevisionView.State).
const (
	StateRunning = "Running"
	StatePending = "Pending"
	StateFailed  = "Failed"
	StateRetired = "Retired"
)

// DecisionView is the autoscaler's last decision for a revision, as the API shows it.
type DecisionView struct {
	Desired             int     `json:"desired"`
	DeciderDesired      int     `json:"deciderDesired"` // before bounds and scale-to-zero rules; -1: no data yet
	Panic               bool    `json:"panic"`
	ActivatorInPath     bool    `json:"activatorInPath"`
	ExcessBurstCapacity float64 `json:"excessBurstCapacity"`
	StableConcurrency   float64 `json:"stableConcurrency"`
	PanicConcurrency    float64 `json:"panicConcurrency"`
	Target              float64 `json:"target"`
}

// Replica is one replica process as the supervisor reports it.
type Replica struct {
	Name      string    `json:"name"`
	Revision  string    `json:"revision"` // namespace/name
	PID       int       `json:"pid,omitempty"`
	Addr      string    `json:"addr,omitempty"`
	State     string    `json:"state"`
	Restarts  int       `json:"restarts"`
	Started   time.Time `json:"started,omitzero"`
	LastExit  string    `json:"lastExit,omitempty"`
	InFlight  int       `json:"inFlight"`
	Sandboxed bool      `json:"sandboxed"`
	// Runtime runs it: process or docker. Image is what a container runs, pinned by digest;
	// ImageSource where it came from (present, pulled, cache) and ImagePullMs how long
	// its start spent on it.
	Runtime     string `json:"runtime,omitempty"`
	Image       string `json:"image,omitempty"`
	ImageSource string `json:"imageSource,omitempty"`
	ImagePullMs int64  `json:"imagePullMs,omitempty"`
	// Reason is the kubelet's name of the last failed start (ErrImagePull, ...); Progress
	// what a start in progress does (pulling an image).
	Reason   string `json:"reason,omitempty"`
	Progress string `json:"progress,omitempty"`
	// GPUs are the devices it holds and GPUMemory the bytes reserved on them.
	GPUs      []int `json:"gpus,omitempty"`
	GPUMemory int64 `json:"gpuMemory,omitempty"`
	// Message says why it waits (no GPU fits) or why it was stopped (a GPU hand-off).
	Message string `json:"message,omitempty"`
	// Unit is the ResourcePolicy unit it was placed in (-1: none) and Pool that unit's pool.
	Unit int    `json:"unit"`
	Pool string `json:"pool,omitempty"`
}

// ServiceDetail is `infera describe service`.
type ServiceDetail struct {
	Service   ServiceView    `json:"service"`
	Revisions []RevisionView `json:"revisions"`
	Replicas  []Replica      `json:"replicas"`
}

// ApplyRequest is the body of POST /api/v1/apply and /api/v1/delete.
type ApplyRequest struct {
	Sources []manifest.Source `json:"sources"`
	DryRun  bool              `json:"dryRun,omitempty"`
}

// ApplyResult is what an apply or delete did, or would do with DryRun.
type ApplyResult struct {
	Changes  []Change `json:"changes,omitempty"`
	Problems []string `json:"problems,omitempty"` // errors and warnings, file:line:col first
	Errors   int      `json:"errors"`
	Warnings int      `json:"warnings"`
}

// Change is one object's outcome, as kubectl prints it: "service.serving.knative.dev/llm created".
type Change struct {
	Kind      string `json:"kind"`
	Group     string `json:"group,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Action    string `json:"action"`
}

func (c Change) String() string {
	k := c.Kind
	if c.Group != "" {
		k += "." + c.Group
	}
	return fmt.Sprintf("%s/%s %s", strings.ToLower(k), c.Name, c.Action)
}

// APIError is every error body of the admin API.
type APIError struct {
	Error  string       `json:"error"`
	Result *ApplyResult `json:"result,omitempty"`
}

// Conditions renders Knative status conditions, sorted by type.
func Conditions(cs []apis.Condition) []ConditionView {
	out := make([]ConditionView, 0, len(cs))
	for _, c := range cs {
		out = append(out, ConditionView{Type: string(c.Type), Status: string(c.Status), Reason: c.Reason, Message: c.Message, Since: c.LastTransitionTime.Inner.Time})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}

// ReadyOf is a Ready condition's status, reason and message (Unknown when absent).
func ReadyOf(c *apis.Condition) (status, reason, message string) {
	if c == nil {
		return string(corev1.ConditionUnknown), "", ""
	}
	return string(c.Status), c.Reason, c.Message
}

// NewServiceView is a Service with its computed status and the route serving it.
func NewServiceView(s *servingv1.Service, route *workload.Route) ServiceView {
	v := ServiceView{
		Namespace: s.Namespace, Name: s.Name, Generation: s.Generation,
		LatestCreated: s.Status.LatestCreatedRevisionName, LatestReady: s.Status.LatestReadyRevisionName,
		Conditions: Conditions(s.Status.Conditions),
	}
	if s.Status.URL != nil {
		v.URL = s.Status.URL.String()
	}
	v.Ready, v.Reason, v.Message = ReadyOf(s.Status.GetCondition(servingv1.ServiceConditionReady))
	for _, t := range s.Status.Traffic {
		tv := TrafficView{Revision: t.RevisionName, Tag: t.Tag, LatestRevision: t.LatestRevision != nil && *t.LatestRevision}
		if t.Percent != nil {
			tv.Percent = *t.Percent
		}
		if t.URL != nil {
			tv.URL = t.URL.String()
		}
		v.Traffic = append(v.Traffic, tv)
	}
	if route != nil {
		v.Models = route.Models
	}
	return v
}

// DatasetView is a Fluid Dataset as the model cache holds it (`infera get datasets`).
type DatasetView struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Phase     string `json:"phase"` // Pending, Fetching, Ready, Failed
	Message   string `json:"message,omitempty"`
	// Bytes cached of Total, and files.
	Bytes     int64 `json:"bytes"`
	Total     int64 `json:"total"`
	Files     int   `json:"files"`
	FilesDone int   `json:"filesDone"`
	// Rate is bytes per second over the last few seconds; ETASeconds the time left at it.
	Rate       float64 `json:"rate"`
	ETASeconds float64 `json:"etaSeconds,omitempty"`
	Level      string  `json:"level,omitempty"` // MEM, SSD, HDD
	LevelPath  string  `json:"levelPath,omitempty"`
	Path       string  `json:"path,omitempty"`
	InPlace    bool    `json:"inPlace,omitempty"` // local or NAS: served where it lies
	// Mode is how replicas get it: "lazy" (a FUSE mount while it streams), "prefetch" (they
	// start once it is complete) or "in-place" (local or NAS, served where it lies).
	Mode        string    `json:"mode"`
	CachedBytes int64     `json:"cachedBytes"`
	LastUsed    time.Time `json:"lastUsed,omitzero"`
	Holders     int       `json:"holders"` // running revisions that mount it
	Attempts    int       `json:"attempts,omitempty"`
	NextRetry   time.Time `json:"nextRetry,omitzero"`
}

// DataLoadView is a Fluid DataLoad's status (`infera get dataloads`).
type DataLoadView struct {
	Namespace          string    `json:"namespace"`
	Name               string    `json:"name"`
	Dataset            string    `json:"dataset"`
	Policy             string    `json:"policy"`
	Phase              string    `json:"phase"` // Pending, Executing, Complete, Failed
	Message            string    `json:"message,omitempty"`
	Duration           string    `json:"duration,omitempty"`
	Runs               int       `json:"runs"`
	LastScheduleTime   time.Time `json:"lastScheduleTime,omitzero"`
	LastSuccessfulTime time.Time `json:"lastSuccessfulTime,omitzero"`
	NextScheduleTime   time.Time `json:"nextScheduleTime,omitzero"`
}

// Bytes is a byte count in binary units, as the CLI and up's progress show sizes: "1.5Gi",
// "512B".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	v, u := float64(n), 0
	for v >= unit && u < 5 {
		v /= unit
		u++
	}
	return fmt.Sprintf("%.1f%ci", v, "KMGTPE"[u-1])
}

// ImageCacheView is an ImageCache (eci.alibabacloud.com/v1) and its images, as `infera get
// imagecaches` and `infera describe imagecache` show it. Phase is ECI's word (Preparing,
// Creating, Ready, Failed, Updating, UpdateFailed).
type ImageCacheView struct {
	Name    string                `json:"name"`
	Phase   string                `json:"phase"`
	Message string                `json:"message,omitempty"`
	Size    int64                 `json:"size"`      // bytes of its Ready images
	Owned   int64                 `json:"ownedSize"` // bytes of the images infera pulled for it (what imageCacheSize bounds)
	Limit   int64                 `json:"limit"`     // imageCacheSize in bytes; 0: none
	Images  []ImageCacheImageView `json:"images"`
}

// ImageCacheImageView is one image of an ImageCache: State Pending, Pulling, Ready, Failed or
// Evicted, with the reason of the last two.
type ImageCacheImageView struct {
	Image    string    `json:"image"`
	State    string    `json:"state"`
	Reason   string    `json:"reason,omitempty"`
	ID       string    `json:"id,omitempty"`
	Digest   string    `json:"digest,omitempty"`
	Size     int64     `json:"size,omitempty"`
	Current  int64     `json:"current,omitempty"` // bytes pulled so far, while Pulling
	Total    int64     `json:"total,omitempty"`
	Owned    bool      `json:"owned"` // infera pulled it, so it may remove it
	PulledAt time.Time `json:"pulledAt,omitzero"`
	LastUsed time.Time `json:"lastUsed,omitzero"`
}

// GPUView is one GPU as `infera get gpus` shows it. A declared GPU (infera up --gpus) has no
// measured figures: Used and the replicas' UsedBytes are those NVML reads, zero when declared.
type GPUView struct {
	Index    int              `json:"index"`
	UUID     string           `json:"uuid"`
	Name     string           `json:"name"`
	Source   string           `json:"source"` // "nvml" or "declared"
	Total    int64            `json:"total"`
	Reserved int64            `json:"reserved"`       // what placements hold on it
	Used     int64            `json:"used,omitempty"` // measured (NVML only)
	Replicas []GPUReplicaView `json:"replicas,omitempty"`
}

// GPUReplicaView is one replica's share of a GPU.
type GPUReplicaView struct {
	Replica  string `json:"replica"`
	Revision string `json:"revision"`
	Reserved int64  `json:"reserved"`
	Whole    bool   `json:"whole,omitempty"`     // nvidia.com/gpu: the device is its own
	Used     int64  `json:"usedBytes,omitempty"` // measured (NVML only)
}

// ColdStartStatus is GET /api/v1/revisions/{namespace}/{name}/coldstart: the revision's state
// (Pending on a Dataset or a GPU says why), what each replica is doing now (pulling an image,
// waiting for a GPU, starting), and its last finished cold start phase by phase.
type ColdStartStatus struct {
	Revision string             `json:"revision"`
	State    string             `json:"state"`
	Reason   string             `json:"reason,omitempty"`
	Message  string             `json:"message,omitempty"`
	Replicas []ColdStartReplica `json:"replicas,omitempty"`
	Last     *ColdStartView     `json:"last,omitempty"`
}

// ColdStartReplica is one replica of a ColdStartStatus.
type ColdStartReplica struct {
	Name     string `json:"name"`
	State    string `json:"state"`
	Progress string `json:"progress,omitempty"`
	Reason   string `json:"reason,omitempty"`
	Message  string `json:"message,omitempty"`
}
