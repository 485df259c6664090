package ack

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"knative.dev/pkg/apis"

	"github.com/infera-dev/infera/internal/kvalidate"
)

// ResourcePolicy tells the ACK scheduler in which order to place the pods it
// selects: unit by unit, each up to its max, and to remove them in reverse.
type ResourcePolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ResourcePolicySpec `json:"spec"`
}

// ResourcePolicySpec is the desired state of a ResourcePolicy.
type ResourcePolicySpec struct {
	// Selector picks the pods, by label, in the policy's namespace.
	Selector map[string]string `json:"selector,omitempty"`
	// LabelExpressions further restrict the pods.
	LabelExpressions []metav1.LabelSelectorRequirement `json:"matchExpressions,omitempty"`
	// Strategy is prefer, the only one ACK supports.
	Strategy SchedulingStrategy `json:"strategy,omitempty"`
	// Units are tried in order on scale-out and emptied in reverse.
	Units []Unit `json:"units,omitempty"`
	// WhenTryNextUnits says when a pod may go on to the next unit.
	WhenTryNextUnits TryNextUnitsOptions `json:"whenTryNextUnits,omitempty"`
	// PreemptPolicy is AfterAllUnits (the default) or BeforeNextUnit.
	PreemptPolicy PreemptPolicy `json:"preemptPolicy,omitempty"`
	// IgnorePreviousPod leaves pods scheduled before the policy out of unit
	// counts (default false); it needs max on a unit.
	IgnorePreviousPod *bool `json:"ignorePreviousPod,omitempty"`
	// IgnoreTerminatingPod leaves terminating pods out of unit counts
	// (default true); it needs max on a unit.
	IgnoreTerminatingPod *bool `json:"ignoreTerminatingPod,omitempty"`
	// MatchLabelKeys groups pods by these labels and applies max per group;
	// it needs max on a unit.
	MatchLabelKeys []string `json:"matchLabelKeys,omitempty"`
	// ConsumerRef names the workload the policy is for.
	ConsumerRef *corev1.ObjectReference `json:"consumerRef,omitempty"`
}

// Unit is one pool of resources.
type Unit struct {
	// Resource is ecs, eci, acs or elastic (deprecated).
	Resource ResourceType `json:"resource,omitempty"`
	// Max caps the pods placed in the unit; unset means no cap.
	Max *int32 `json:"max,omitempty"`
	// MaxResources caps the resources the unit's pods request.
	MaxResources corev1.ResourceList `json:"maxResources,omitempty"`
	// NodeSelector picks the unit's nodes by label.
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	// PodLabels and PodAnnotations are put on pods placed in the unit, and
	// only pods carrying them count toward its max.
	PodLabels      map[string]string `json:"podLabels,omitempty"`
	PodAnnotations map[string]string `json:"podAnnotations,omitempty"`
	SpotInstance   bool              `json:"spotInstance,omitempty"`
	ScaleInWeight  *int32            `json:"scaleInWeight,omitempty"`
}

// TryNextUnitsOptions says when a pod may use the next unit.
type TryNextUnitsOptions struct {
	// Policy is LackResourceOrExceedMax (the default), ExceedMax,
	// TimeoutOrExceedMax or LackResourceAndNoTerminating.
	Policy TryNextPolicy `json:"policy,omitempty"`
	// Timeout is how long TimeoutOrExceedMax waits; 15m when unset.
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}

// SchedulingStrategy is how strictly units are followed.
type SchedulingStrategy string

// StrategyPrefer is the only strategy ACK supports.
const StrategyPrefer SchedulingStrategy = "prefer"

// ResourceType is the kind of resources a unit holds.
type ResourceType string

// Resource types. Elastic is deprecated in favour of ecs units whose
// podLabels carry k8s.aliyun.com/resource-policy-wait-for-ecs-scaling.
const (
	ResourceECS     ResourceType = "ecs"
	ResourceECI     ResourceType = "eci"
	ResourceACS     ResourceType = "acs"
	ResourceElastic ResourceType = "elastic"
)

// PreemptPolicy says when the scheduler may preempt.
type PreemptPolicy string

// Preempt policies; AfterAllUnits is the default.
const (
	PreemptAfterAllUnits  PreemptPolicy = "AfterAllUnits"
	PreemptBeforeNextUnit PreemptPolicy = "BeforeNextUnit"
)

// TryNextPolicy is when a pod may move on to the next unit.
type TryNextPolicy string

// Policies for moving on to the next unit. The CRD spells the last one
// LackResourceAndNoterminating and the documentation
// LackResourceAndNoTerminating; both are accepted. Timeout is in the CRD's
// enum but not documented.
const (
	LackResourceOrExceedMax      TryNextPolicy = "LackResourceOrExceedMax"
	ExceedMax                    TryNextPolicy = "ExceedMax"
	TimeoutOrExceedMax           TryNextPolicy = "TimeoutOrExceedMax"
	LackResourceAndNoTerminating TryNextPolicy = "LackResourceAndNoTerminating"
	LackResourceAndNoterminating TryNextPolicy = "LackResourceAndNoterminating"
	Timeout                      TryNextPolicy = "Timeout"
)

// DefaultTryNextTimeout is the wait of TimeoutOrExceedMax when timeout is unset.
const DefaultTryNextTimeout = 15 * time.Minute

// SetDefaults applies the CRD's defaults and the documented 15 minute
// timeout of TimeoutOrExceedMax.
func (p *ResourcePolicy) SetDefaults() {
	s := &p.Spec
	if s.IgnorePreviousPod == nil {
		s.IgnorePreviousPod = new(bool)
	}
	if s.IgnoreTerminatingPod == nil {
		t := true
		s.IgnoreTerminatingPod = &t
	}
	if s.PreemptPolicy == "" {
		s.PreemptPolicy = PreemptAfterAllUnits
	}
	if s.WhenTryNextUnits.Policy == "" {
		s.WhenTryNextUnits.Policy = LackResourceOrExceedMax
	}
	if s.WhenTryNextUnits.Policy == TimeoutOrExceedMax && s.WhenTryNextUnits.Timeout == nil {
		s.WhenTryNextUnits.Timeout = &metav1.Duration{Duration: DefaultTryNextTimeout}
	}
}

// Validate reports every problem in the ResourcePolicy.
func (p *ResourcePolicy) Validate() *apis.FieldError {
	return p.Spec.validate().ViaField("spec")
}

func (s *ResourcePolicySpec) validate() *apis.FieldError {
	var errs *apis.FieldError
	// ACK applies a policy without a selector to every pod of its
	// namespace; infera requires the policy to say which pods it is for.
	if len(s.Selector) == 0 && len(s.LabelExpressions) == 0 {
		errs = errs.Also(apis.ErrMissingField("selector"))
	}
	errs = errs.Also(validateLabels(s.Selector, "selector"))
	for i, r := range s.LabelExpressions {
		errs = errs.Also(validateRequirement(r).ViaFieldIndex("matchExpressions", i))
	}
	if s.Strategy != "" && s.Strategy != StrategyPrefer {
		errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("invalid value %q: ACK supports only prefer", s.Strategy), "strategy"))
	}

	if len(s.Units) == 0 {
		errs = errs.Also(apis.ErrMissingField("units"))
	}
	anyMax := false
	for i := range s.Units {
		u := &s.Units[i]
		anyMax = anyMax || u.Max != nil || len(u.MaxResources) > 0
		errs = errs.Also(u.validate().ViaFieldIndex("units", i))
	}

	w := s.WhenTryNextUnits
	errs = errs.Also(kvalidate.Enum(w.Policy, "whenTryNextUnits.policy",
		LackResourceOrExceedMax, ExceedMax, TimeoutOrExceedMax, LackResourceAndNoTerminating, LackResourceAndNoterminating, Timeout))
	if w.Timeout != nil {
		if w.Timeout.Duration <= 0 {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("must be greater than 0, got %s", w.Timeout.Duration), "whenTryNextUnits.timeout"))
		}
		if w.Policy != "" && w.Policy != TimeoutOrExceedMax && w.Policy != Timeout {
			errs = errs.Also(apis.ErrGeneric("ignored unless policy is TimeoutOrExceedMax", "whenTryNextUnits.timeout").At(apis.WarningLevel))
		}
	}
	errs = errs.Also(kvalidate.Enum(s.PreemptPolicy, "preemptPolicy", PreemptAfterAllUnits, PreemptBeforeNextUnit))

	if !anyMax {
		if len(s.MatchLabelKeys) > 0 {
			errs = errs.Also(apis.ErrGeneric("has no effect unless a unit sets max", "matchLabelKeys").At(apis.WarningLevel))
		}
		if s.IgnorePreviousPod != nil && *s.IgnorePreviousPod {
			errs = errs.Also(apis.ErrGeneric("has no effect unless a unit sets max", "ignorePreviousPod").At(apis.WarningLevel))
		}
	}
	for i, k := range s.MatchLabelKeys {
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("invalid label key %q: %s", k, strings.Join(msgs, "; ")), fmt.Sprintf("matchLabelKeys[%d]", i)))
		}
	}
	return errs
}

func (u *Unit) validate() *apis.FieldError {
	var errs *apis.FieldError
	if u.Resource == "" {
		errs = errs.Also(apis.ErrMissingField("resource"))
	}
	errs = errs.Also(kvalidate.Enum(u.Resource, "resource", ResourceECS, ResourceECI, ResourceACS, ResourceElastic))
	if u.Resource == ResourceElastic {
		errs = errs.Also(apis.ErrGeneric(
			`elastic is deprecated: use ecs with podLabels k8s.aliyun.com/resource-policy-wait-for-ecs-scaling: "true"`,
			"resource").At(apis.WarningLevel))
	}
	if u.Max != nil && *u.Max < 0 {
		errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("must be >= 0, got %d", *u.Max), "max"))
	}
	for name, q := range u.MaxResources {
		if q.Sign() < 0 {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("must be >= 0, got %s", q.String()), kvalidate.KeyPath("maxResources", string(name))))
		}
	}
	errs = errs.Also(validateLabels(u.NodeSelector, "nodeSelector"), validateLabels(u.PodLabels, "podLabels"))
	return errs
}

// validateLabels checks label keys and values of the map field.
func validateLabels(labels map[string]string, field string) *apis.FieldError {
	var errs *apis.FieldError
	for k, v := range labels {
		if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("invalid label key %q: %s", k, strings.Join(msgs, "; ")), kvalidate.KeyPath(field, k)))
		}
		if msgs := validation.IsValidLabelValue(v); len(msgs) > 0 {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("invalid label value %q: %s", v, strings.Join(msgs, "; ")), kvalidate.KeyPath(field, k)))
		}
	}
	return errs
}

// validateRequirement checks a label selector requirement the way
// Kubernetes does: In and NotIn need values, Exists and DoesNotExist none.
func validateRequirement(r metav1.LabelSelectorRequirement) *apis.FieldError {
	var errs *apis.FieldError
	if r.Key == "" {
		errs = errs.Also(apis.ErrMissingField("key"))
	} else if msgs := validation.IsQualifiedName(r.Key); len(msgs) > 0 {
		errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("invalid label key %q: %s", r.Key, strings.Join(msgs, "; ")), "key"))
	}
	switch r.Operator {
	case metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn:
		if len(r.Values) == 0 {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("must be non-empty when operator is %s", r.Operator), "values"))
		}
	case metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist:
		if len(r.Values) > 0 {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("must be empty when operator is %s", r.Operator), "values"))
		}
	case "":
		errs = errs.Also(apis.ErrMissingField("operator"))
	default:
		errs = errs.Also(kvalidate.Enum(r.Operator, "operator",
			metav1.LabelSelectorOpIn, metav1.LabelSelectorOpNotIn, metav1.LabelSelectorOpExists, metav1.LabelSelectorOpDoesNotExist))
	}
	return errs
}
