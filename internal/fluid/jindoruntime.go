package fluid

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/apis"

	"github.com/infera-dev/infera/internal/kvalidate"
)

// JindoRuntime caches the Dataset of the same name with JindoFS (JindoFSx).
type JindoRuntime struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec JindoRuntimeSpec `json:"spec"`
}

// JindoRuntimeSpec is the desired state of a JindoRuntime.
type JindoRuntimeSpec struct {
	JindoVersion VersionSpec           `json:"jindoVersion,omitempty"`
	Master       JindoCompTemplateSpec `json:"master,omitempty"`
	Worker       JindoCompTemplateSpec `json:"worker,omitempty"`
	Fuse         JindoFuseSpec         `json:"fuse,omitempty"`
	// Properties configure the Jindo system.
	Properties map[string]string `json:"properties,omitempty"`
	// TieredStore is the cache; Jindo uses its first level only.
	TieredStore TieredStore `json:"tieredstore,omitempty"`
	// Replicas is the number of cache workers.
	Replicas     int32             `json:"replicas,omitempty"`
	RunAs        *User             `json:"runAs,omitempty"`
	User         string            `json:"user,omitempty"`
	HadoopConfig string            `json:"hadoopConfig,omitempty"`
	Secret       string            `json:"secret,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	PodMetadata  PodMetadata       `json:"podMetadata,omitempty"`
	LogConfig    map[string]string `json:"logConfig,omitempty"`
	// NetworkMode is spelled networkmode on JindoRuntime.
	NetworkMode      NetworkMode                   `json:"networkmode,omitempty"`
	CleanCachePolicy CleanCachePolicy              `json:"cleanCachePolicy,omitempty"`
	Volumes          []corev1.Volume               `json:"volumes,omitempty"`
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
}

// JindoCompTemplateSpec describes the Jindo master or workers.
type JindoCompTemplateSpec struct {
	Replicas         int32                         `json:"replicas,omitempty"`
	Properties       map[string]string             `json:"properties,omitempty"`
	Ports            map[string]int                `json:"ports,omitempty"`
	Resources        corev1.ResourceRequirements   `json:"resources,omitempty"`
	Env              map[string]string             `json:"env,omitempty"`
	NodeSelector     map[string]string             `json:"nodeSelector,omitempty"`
	Tolerations      []corev1.Toleration           `json:"tolerations,omitempty"`
	Labels           map[string]string             `json:"labels,omitempty"`
	PodMetadata      PodMetadata                   `json:"podMetadata,omitempty"`
	Disabled         bool                          `json:"disabled,omitempty"`
	VolumeMounts     []corev1.VolumeMount          `json:"volumeMounts,omitempty"`
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
}

// JindoFuseSpec describes the Jindo fuse client that serves the claim.
type JindoFuseSpec struct {
	Image            string                        `json:"image,omitempty"`
	ImageTag         string                        `json:"imageTag,omitempty"`
	ImagePullPolicy  string                        `json:"imagePullPolicy,omitempty"`
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
	Properties       map[string]string             `json:"properties,omitempty"`
	Env              map[string]string             `json:"env,omitempty"`
	Resources        corev1.ResourceRequirements   `json:"resources,omitempty"`
	Args             []string                      `json:"args,omitempty"`
	NodeSelector     map[string]string             `json:"nodeSelector,omitempty"`
	Tolerations      []corev1.Toleration           `json:"tolerations,omitempty"`
	Labels           map[string]string             `json:"labels,omitempty"`
	PodMetadata      PodMetadata                   `json:"podMetadata,omitempty"`
	// CleanPolicy is OnDemand or OnRuntimeDeleted (the default).
	CleanPolicy FuseCleanPolicy   `json:"cleanPolicy,omitempty"`
	Disabled    bool              `json:"disabled,omitempty"`
	LogConfig   map[string]string `json:"logConfig,omitempty"`
	Metrics     ClientMetrics     `json:"metrics,omitempty"`
}

// SetDefaults applies the CRD's tier volumeType and Fluid's fuse cleanPolicy.
func (r *JindoRuntime) SetDefaults() {
	r.Spec.TieredStore.setDefaults()
	defaultCleanPolicy(&r.Spec.Fuse.CleanPolicy)
}

// Validate reports every problem in the JindoRuntime.
func (r *JindoRuntime) Validate() *apis.FieldError {
	s := &r.Spec
	errs := validateRuntimeSpec(s.Replicas, &s.TieredStore)
	for i := 1; i < len(s.TieredStore.Levels); i++ {
		errs = errs.Also(apis.ErrGeneric("ignored: JindoRuntime uses only levels[0]",
			fmt.Sprintf("tieredstore.levels[%d]", i)).At(apis.WarningLevel))
	}
	errs = errs.Also(
		validateComponentReplicas(s.Master.Replicas, "master.replicas"),
		validateComponentReplicas(s.Worker.Replicas, "worker.replicas"),
		validatePullPolicy(s.JindoVersion.ImagePullPolicy, "jindoVersion.imagePullPolicy"),
		validatePullPolicy(s.Fuse.ImagePullPolicy, "fuse.imagePullPolicy"),
		kvalidate.Enum(s.Fuse.CleanPolicy, "fuse.cleanPolicy", CleanPolicyOnDemand, CleanPolicyOnRuntimeDeleted),
		validateNetworkMode(s.NetworkMode, "networkmode"),
	)
	return validateName(r.Name).Also(errs.ViaField("spec"))
}
