package fluid

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/apis"

	"github.com/infera-dev/infera/internal/kvalidate"
)

// JuiceFSRuntime caches the Dataset of the same name with JuiceFS.
type JuiceFSRuntime struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec JuiceFSRuntimeSpec `json:"spec"`
}

// JuiceFSRuntimeSpec is the desired state of a JuiceFSRuntime.
type JuiceFSRuntimeSpec struct {
	JuiceFSVersion VersionSpec             `json:"juicefsVersion,omitempty"`
	InitUsers      InitUsersSpec           `json:"initUsers,omitempty"`
	Master         JuiceFSCompTemplateSpec `json:"master,omitempty"`
	Worker         JuiceFSCompTemplateSpec `json:"worker,omitempty"`
	JobWorker      JuiceFSCompTemplateSpec `json:"jobWorker,omitempty"`
	Fuse           JuiceFSFuseSpec         `json:"fuse,omitempty"`
	// TieredStore is the cache: path is JuiceFS's cache-dir, quota its
	// cache-size and low its free-space-ratio.
	TieredStore TieredStore `json:"tieredstore,omitempty"`
	Configs     []string    `json:"configs,omitempty"`
	// Replicas is the number of cache workers.
	Replicas             int32                          `json:"replicas,omitempty"`
	RunAs                *User                          `json:"runAs,omitempty"`
	DisablePrometheus    bool                           `json:"disablePrometheus,omitempty"`
	Volumes              []corev1.Volume                `json:"volumes,omitempty"`
	VolumeClaimTemplates []corev1.PersistentVolumeClaim `json:"volumeClaimTemplates,omitempty"`
	PodMetadata          PodMetadata                    `json:"podMetadata,omitempty"`
	RuntimeManagement    RuntimeManagement              `json:"management,omitempty"`
}

// JuiceFSCompTemplateSpec describes a JuiceFS component.
type JuiceFSCompTemplateSpec struct {
	Replicas     int32                       `json:"replicas,omitempty"`
	Ports        []corev1.ContainerPort      `json:"ports,omitempty"`
	Resources    corev1.ResourceRequirements `json:"resources,omitempty"`
	Options      map[string]string           `json:"options,omitempty"`
	Env          []corev1.EnvVar             `json:"env,omitempty"`
	Enabled      bool                        `json:"enabled,omitempty"`
	NodeSelector map[string]string           `json:"nodeSelector,omitempty"`
	VolumeMounts []corev1.VolumeMount        `json:"volumeMounts,omitempty"`
	PodMetadata  PodMetadata                 `json:"podMetadata,omitempty"`
	NetworkMode  NetworkMode                 `json:"networkMode,omitempty"`
}

// JuiceFSFuseSpec describes the JuiceFS fuse client that serves the claim.
type JuiceFSFuseSpec struct {
	Image           string                      `json:"image,omitempty"`
	ImageTag        string                      `json:"imageTag,omitempty"`
	ImagePullPolicy string                      `json:"imagePullPolicy,omitempty"`
	Env             []corev1.EnvVar             `json:"env,omitempty"`
	Resources       corev1.ResourceRequirements `json:"resources,omitempty"`
	Options         map[string]string           `json:"options,omitempty"`
	NodeSelector    map[string]string           `json:"nodeSelector,omitempty"`
	VolumeMounts    []corev1.VolumeMount        `json:"volumeMounts,omitempty"`
	// CleanPolicy is OnDemand, OnRuntimeDeleted (the default) or OnFuseChanged.
	CleanPolicy FuseCleanPolicy `json:"cleanPolicy,omitempty"`
	PodMetadata PodMetadata     `json:"podMetadata,omitempty"`
	NetworkMode NetworkMode     `json:"networkMode,omitempty"`
}

// SetDefaults applies the CRD's tier volumeType and Fluid's fuse cleanPolicy.
func (r *JuiceFSRuntime) SetDefaults() {
	r.Spec.TieredStore.setDefaults()
	defaultCleanPolicy(&r.Spec.Fuse.CleanPolicy)
}

// Validate reports every problem in the JuiceFSRuntime.
func (r *JuiceFSRuntime) Validate() *apis.FieldError {
	s := &r.Spec
	errs := validateRuntimeSpec(s.Replicas, &s.TieredStore)
	for name, c := range map[string]*JuiceFSCompTemplateSpec{
		"master": &s.Master, "worker": &s.Worker, "jobWorker": &s.JobWorker,
	} {
		errs = errs.Also(
			validateComponentReplicas(c.Replicas, name+".replicas"),
			validateNetworkMode(c.NetworkMode, name+".networkMode"),
		)
	}
	errs = errs.Also(
		validatePullPolicy(s.JuiceFSVersion.ImagePullPolicy, "juicefsVersion.imagePullPolicy"),
		validatePullPolicy(s.InitUsers.ImagePullPolicy, "initUsers.imagePullPolicy"),
		validatePullPolicy(s.Fuse.ImagePullPolicy, "fuse.imagePullPolicy"),
		kvalidate.Enum(s.Fuse.CleanPolicy, "fuse.cleanPolicy", CleanPolicyOnDemand, CleanPolicyOnRuntimeDeleted, CleanPolicyOnFuseChanged),
		validateNetworkMode(s.Fuse.NetworkMode, "fuse.networkMode"),
	)
	return validateName(r.Name).Also(errs.ViaField("spec"))
}
