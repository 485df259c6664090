package fluid

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/apis"

	"github.com/infera-dev/infera/internal/kvalidate"
)

// AlluxioRuntime caches the Dataset of the same name with Alluxio.
type AlluxioRuntime struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec AlluxioRuntimeSpec `json:"spec"`
}

// AlluxioRuntimeSpec is the desired state of an AlluxioRuntime.
type AlluxioRuntimeSpec struct {
	AlluxioVersion VersionSpec             `json:"alluxioVersion,omitempty"`
	Master         AlluxioCompTemplateSpec `json:"master,omitempty"`
	JobMaster      AlluxioCompTemplateSpec `json:"jobMaster,omitempty"`
	Worker         AlluxioCompTemplateSpec `json:"worker,omitempty"`
	JobWorker      AlluxioCompTemplateSpec `json:"jobWorker,omitempty"`
	APIGateway     AlluxioCompTemplateSpec `json:"apiGateway,omitempty"`
	InitUsers      InitUsersSpec           `json:"initUsers,omitempty"`
	Fuse           AlluxioFuseSpec         `json:"fuse,omitempty"`
	// Properties are Alluxio configuration properties.
	Properties map[string]string `json:"properties,omitempty"`
	JvmOptions []string          `json:"jvmOptions,omitempty"`
	// TieredStore is the cache, one level per medium.
	TieredStore TieredStore `json:"tieredstore,omitempty"`
	Data        Data        `json:"data,omitempty"`
	// Replicas is the number of cache workers.
	Replicas          int32                         `json:"replicas,omitempty"`
	RunAs             *User                         `json:"runAs,omitempty"`
	DisablePrometheus bool                          `json:"disablePrometheus,omitempty"`
	HadoopConfig      string                        `json:"hadoopConfig,omitempty"`
	Volumes           []corev1.Volume               `json:"volumes,omitempty"`
	PodMetadata       PodMetadata                   `json:"podMetadata,omitempty"`
	RuntimeManagement RuntimeManagement             `json:"management,omitempty"`
	ImagePullSecrets  []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
}

// AlluxioCompTemplateSpec describes an Alluxio component.
type AlluxioCompTemplateSpec struct {
	Replicas         int32                         `json:"replicas,omitempty"`
	JvmOptions       []string                      `json:"jvmOptions,omitempty"`
	Properties       map[string]string             `json:"properties,omitempty"`
	Ports            map[string]int                `json:"ports,omitempty"`
	Resources        corev1.ResourceRequirements   `json:"resources,omitempty"`
	Env              map[string]string             `json:"env,omitempty"`
	Enabled          bool                          `json:"enabled,omitempty"`
	NodeSelector     map[string]string             `json:"nodeSelector,omitempty"`
	NetworkMode      NetworkMode                   `json:"networkMode,omitempty"`
	VolumeMounts     []corev1.VolumeMount          `json:"volumeMounts,omitempty"`
	PodMetadata      PodMetadata                   `json:"podMetadata,omitempty"`
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
}

// AlluxioFuseSpec describes the Alluxio fuse client that serves the claim.
type AlluxioFuseSpec struct {
	Image            string                        `json:"image,omitempty"`
	ImageTag         string                        `json:"imageTag,omitempty"`
	ImagePullPolicy  string                        `json:"imagePullPolicy,omitempty"`
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`
	JvmOptions       []string                      `json:"jvmOptions,omitempty"`
	Properties       map[string]string             `json:"properties,omitempty"`
	Env              map[string]string             `json:"env,omitempty"`
	Resources        corev1.ResourceRequirements   `json:"resources,omitempty"`
	Args             []string                      `json:"args,omitempty"`
	NodeSelector     map[string]string             `json:"nodeSelector,omitempty"`
	// CleanPolicy is OnDemand or OnRuntimeDeleted (the default).
	CleanPolicy  FuseCleanPolicy      `json:"cleanPolicy,omitempty"`
	NetworkMode  NetworkMode          `json:"networkMode,omitempty"`
	VolumeMounts []corev1.VolumeMount `json:"volumeMounts,omitempty"`
	PodMetadata  PodMetadata          `json:"podMetadata,omitempty"`
}

// Data is how Alluxio manages the cached data.
type Data struct {
	Replicas int32 `json:"replicas"`
	Pin      bool  `json:"pin"`
}

// SetDefaults applies the CRD's tier volumeType and Fluid's fuse cleanPolicy.
func (r *AlluxioRuntime) SetDefaults() {
	r.Spec.TieredStore.setDefaults()
	defaultCleanPolicy(&r.Spec.Fuse.CleanPolicy)
}

// Validate reports every problem in the AlluxioRuntime.
func (r *AlluxioRuntime) Validate() *apis.FieldError {
	s := &r.Spec
	errs := validateRuntimeSpec(s.Replicas, &s.TieredStore)
	for name, c := range map[string]*AlluxioCompTemplateSpec{
		"master": &s.Master, "jobMaster": &s.JobMaster, "worker": &s.Worker,
		"jobWorker": &s.JobWorker, "apiGateway": &s.APIGateway,
	} {
		errs = errs.Also(
			validateComponentReplicas(c.Replicas, name+".replicas"),
			validateNetworkMode(c.NetworkMode, name+".networkMode"),
		)
	}
	errs = errs.Also(
		minErr(int64(s.Data.Replicas), 0, "data.replicas"),
		validatePullPolicy(s.AlluxioVersion.ImagePullPolicy, "alluxioVersion.imagePullPolicy"),
		validatePullPolicy(s.InitUsers.ImagePullPolicy, "initUsers.imagePullPolicy"),
		validatePullPolicy(s.Fuse.ImagePullPolicy, "fuse.imagePullPolicy"),
		kvalidate.Enum(s.Fuse.CleanPolicy, "fuse.cleanPolicy", CleanPolicyOnDemand, CleanPolicyOnRuntimeDeleted),
		validateNetworkMode(s.Fuse.NetworkMode, "fuse.networkMode"),
	)
	return validateName(r.Name).Also(errs.ViaField("spec"))
}
