package fluid

import (
	"fmt"
	"strings"

	"github.com/robfig/cron/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/apis"

	"github.com/infera-dev/infera/internal/kvalidate"
)

// DataLoad prefetches (part of) a Dataset into its runtime's cache.
type DataLoad struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec DataLoadSpec `json:"spec"`
}

// DataLoadSpec is the desired state of a DataLoad.
type DataLoadSpec struct {
	// Dataset is the dataset to load; Fluid requires its namespace to be the
	// DataLoad's.
	Dataset TargetDataset `json:"dataset,omitempty"`
	// LoadMetadata syncs metadata before loading.
	LoadMetadata bool `json:"loadMetadata,omitempty"`
	// Target lists the paths to load; empty means the whole dataset.
	Target []TargetPath `json:"target,omitempty"`
	// Options are runtime-specific load options.
	Options       map[string]string   `json:"options,omitempty"`
	PodMetadata   PodMetadata         `json:"podMetadata,omitempty"`
	Affinity      *corev1.Affinity    `json:"affinity,omitempty"`
	Tolerations   []corev1.Toleration `json:"tolerations,omitempty"`
	NodeSelector  map[string]string   `json:"nodeSelector,omitempty"`
	SchedulerName string              `json:"schedulerName,omitempty"`
	// Policy is Once (the default), Cron or OnEvent.
	Policy Policy `json:"policy,omitempty"`
	// Schedule is the cron schedule of a Cron policy.
	Schedule string `json:"schedule,omitempty"`
	// RunAfter orders this load after another data operation.
	RunAfter                *OperationRef               `json:"runAfter,omitempty"`
	TTLSecondsAfterFinished *int32                      `json:"ttlSecondsAfterFinished,omitempty"`
	Resources               corev1.ResourceRequirements `json:"resources,omitempty"`
}

// TargetDataset names the dataset a data operation works on.
type TargetDataset struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

// TargetPath is one path to load, with the number of cached replicas.
type TargetPath struct {
	Path     string `json:"path"`
	Replicas int32  `json:"replicas,omitempty"`
}

// Policy says when a data operation runs.
type Policy string

// Data operation policies; Once is the default.
const (
	PolicyOnce    Policy = "Once"
	PolicyCron    Policy = "Cron"
	PolicyOnEvent Policy = "OnEvent"
)

// ObjectRef names another data operation.
type ObjectRef struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind"`
	Name       string `json:"name"`
	Namespace  string `json:"namespace,omitempty"`
}

// OperationRef is a data operation this one runs after.
type OperationRef struct {
	ObjectRef        `json:",inline"`
	AffinityStrategy AffinityStrategy `json:"affinityStrategy,omitempty"`
}

// AffinityStrategy places a data operation's pods near a preceding one's.
type AffinityStrategy struct {
	DependOn *ObjectRef `json:"dependOn,omitempty"`
	Policy   string     `json:"policy,omitempty"`
	Prefers  []Prefer   `json:"prefers,omitempty"`
	Requires []Require  `json:"requires,omitempty"`
}

// Prefer is a label key and weight for a preferred scheduling term.
type Prefer struct {
	Name   string `json:"name"`
	Weight int32  `json:"weight"`
}

// Require is a label key for a required scheduling term.
type Require struct {
	Name string `json:"name"`
}

// SetDefaults applies the CRD default policy, Once.
func (l *DataLoad) SetDefaults() {
	if l.Spec.Policy == "" {
		l.Spec.Policy = PolicyOnce
	}
}

// Validate reports every problem in the DataLoad.
func (l *DataLoad) Validate() *apis.FieldError {
	return l.Spec.validate(l.Namespace).ViaField("spec")
}

// validate checks the spec of a DataLoad living in namespace.
func (s *DataLoadSpec) validate(namespace string) *apis.FieldError {
	var errs *apis.FieldError
	if s.Dataset.Name == "" {
		errs = errs.Also(apis.ErrMissingField("dataset.name"))
	}
	if namespace == "" {
		namespace = metav1.NamespaceDefault
	}
	switch s.Dataset.Namespace {
	case "":
		errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("not set: Fluid requires the DataLoad's namespace (%q) here", namespace),
			"dataset.namespace").At(apis.WarningLevel))
	case namespace:
	default:
		errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("must be the DataLoad's namespace %q, got %q", namespace, s.Dataset.Namespace),
			"dataset.namespace"))
	}

	for i, t := range s.Target {
		switch {
		case t.Path == "":
			errs = errs.Also(apis.ErrMissingField("path").ViaFieldIndex("target", i))
		case !strings.HasPrefix(t.Path, "/"):
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("path %q must be absolute (a path inside the dataset)", t.Path), "path").ViaFieldIndex("target", i))
		}
		errs = errs.Also(minErr(int64(t.Replicas), 0, "replicas").ViaFieldIndex("target", i))
	}

	errs = errs.Also(kvalidate.Enum(s.Policy, "policy", PolicyOnce, PolicyCron, PolicyOnEvent))
	switch {
	case s.Policy == PolicyCron && s.Schedule == "":
		errs = errs.Also(apis.ErrGeneric("required when policy is Cron", "schedule"))
	case s.Policy == PolicyCron:
		if _, err := cron.ParseStandard(s.Schedule); err != nil {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("invalid cron schedule %q: %v", s.Schedule, err), "schedule"))
		}
	case s.Schedule != "":
		errs = errs.Also(apis.ErrGeneric("ignored unless policy is Cron", "schedule").At(apis.WarningLevel))
	}

	if s.TTLSecondsAfterFinished != nil {
		errs = errs.Also(minErr(int64(*s.TTLSecondsAfterFinished), 0, "ttlSecondsAfterFinished"))
	}
	if r := s.RunAfter; r != nil {
		if r.Kind == "" {
			errs = errs.Also(apis.ErrMissingField("runAfter.kind"))
		}
		if r.Name == "" {
			errs = errs.Also(apis.ErrMissingField("runAfter.name"))
		}
		errs = errs.Also(kvalidate.Enum(r.Kind, "runAfter.kind", "DataLoad", "DataBackup", "DataMigrate", "DataProcess"))
		errs = errs.Also(kvalidate.Enum(r.AffinityStrategy.Policy, "runAfter.affinityStrategy.policy", "Require", "Prefer"))
	}
	return errs
}
