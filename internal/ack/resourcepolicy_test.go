package ack_test

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/infera-dev/infera/internal/ack"
)

// validPolicy is the article's ResourcePolicy: ECS first, then ECI.
func validPolicy() *ack.ResourcePolicy {
	return &ack.ResourcePolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "helloworld-go", Namespace: "default"},
		Spec: ack.ResourcePolicySpec{
			Selector: map[string]string{"serving.knative.dev/service": "helloworld-go"},
			Strategy: ack.StrategyPrefer,
			Units: []ack.Unit{
				{Resource: ack.ResourceECS, Max: ptr(int32(10)), NodeSelector: map[string]string{"key2": "value2"}},
				{Resource: ack.ResourceECS, NodeSelector: map[string]string{"key3": "value3"}},
				{Resource: ack.ResourceECI},
			},
		},
	}
}

func TestResourcePolicyValidate(t *testing.T) {
	badKey := strings.Join(validation.IsQualifiedName("bad key"), "; ")
	badValue := strings.Join(validation.IsValidLabelValue("-x"), "; ")
	tests := []struct {
		name   string
		mutate func(p *ack.ResourcePolicy)
		want   []string
	}{{
		name:   "valid",
		mutate: func(p *ack.ResourcePolicy) {},
	}, {
		name:   "no selector",
		mutate: func(p *ack.ResourcePolicy) { p.Spec.Selector = nil },
		want:   []string{"Error spec.selector: missing field(s)"},
	}, {
		name: "matchExpressions instead of a selector",
		mutate: func(p *ack.ResourcePolicy) {
			p.Spec.Selector = nil
			p.Spec.LabelExpressions = []metav1.LabelSelectorRequirement{{
				Key: "serving.knative.dev/service", Operator: metav1.LabelSelectorOpIn, Values: []string{"a", "b"},
			}}
		},
	}, {
		name: "bad matchExpressions",
		mutate: func(p *ack.ResourcePolicy) {
			p.Spec.LabelExpressions = []metav1.LabelSelectorRequirement{
				{Key: "app", Operator: metav1.LabelSelectorOpIn},
				{Key: "app", Operator: metav1.LabelSelectorOpExists, Values: []string{"x"}},
				{Operator: "Equals"},
				{Key: "app"},
			}
		},
		want: []string{
			"Error spec.matchExpressions[0].values: must be non-empty when operator is In",
			"Error spec.matchExpressions[1].values: must be empty when operator is Exists",
			"Error spec.matchExpressions[2].key: missing field(s)",
			`Error spec.matchExpressions[2].operator: invalid value "Equals": expected one of In, NotIn, Exists, DoesNotExist`,
			"Error spec.matchExpressions[3].operator: missing field(s)",
		},
	}, {
		name:   "bad selector label",
		mutate: func(p *ack.ResourcePolicy) { p.Spec.Selector = map[string]string{"bad key": "-x"} },
		want: []string{
			`Error spec.selector[bad key]: invalid label key "bad key": ` + badKey,
			`Error spec.selector[bad key]: invalid label value "-x": ` + badValue,
		},
	}, {
		name:   "no strategy",
		mutate: func(p *ack.ResourcePolicy) { p.Spec.Strategy = "" },
	}, {
		name:   "required strategy",
		mutate: func(p *ack.ResourcePolicy) { p.Spec.Strategy = "required" },
		want:   []string{`Error spec.strategy: invalid value "required": ACK supports only prefer`},
	}, {
		name:   "no units",
		mutate: func(p *ack.ResourcePolicy) { p.Spec.Units = nil },
		want:   []string{"Error spec.units: missing field(s)"},
	}, {
		name:   "unit without resource",
		mutate: func(p *ack.ResourcePolicy) { p.Spec.Units[2].Resource = "" },
		want:   []string{"Error spec.units[2].resource: missing field(s)"},
	}, {
		name:   "unknown resource",
		mutate: func(p *ack.ResourcePolicy) { p.Spec.Units[2].Resource = "ECI" },
		want:   []string{`Error spec.units[2].resource: invalid value "ECI": expected one of ecs, eci, acs, elastic`},
	}, {
		name:   "acs unit",
		mutate: func(p *ack.ResourcePolicy) { p.Spec.Units[2].Resource = ack.ResourceACS },
	}, {
		name:   "elastic unit",
		mutate: func(p *ack.ResourcePolicy) { p.Spec.Units[1].Resource = ack.ResourceElastic },
		want: []string{`Warning spec.units[1].resource: elastic is deprecated: ` +
			`use ecs with podLabels k8s.aliyun.com/resource-policy-wait-for-ecs-scaling: "true"`},
	}, {
		name:   "zero max",
		mutate: func(p *ack.ResourcePolicy) { p.Spec.Units[0].Max = ptr(int32(0)) },
	}, {
		name:   "negative max",
		mutate: func(p *ack.ResourcePolicy) { p.Spec.Units[0].Max = ptr(int32(-1)) },
		want:   []string{"Error spec.units[0].max: must be >= 0, got -1"},
	}, {
		name: "maxResources",
		mutate: func(p *ack.ResourcePolicy) {
			p.Spec.Units[1].MaxResources = corev1.ResourceList{"cpu": resource.MustParse("-1"), "memory": resource.MustParse("64Gi")}
		},
		want: []string{"Error spec.units[1].maxResources[cpu]: must be >= 0, got -1"},
	}, {
		name: "bad unit labels",
		mutate: func(p *ack.ResourcePolicy) {
			p.Spec.Units[0].NodeSelector = map[string]string{"alibabacloud.com/nodepool-id": "-x"}
			p.Spec.Units[1].PodLabels = map[string]string{"bad key": "v"}
		},
		want: []string{
			`Error spec.units[0].nodeSelector[alibabacloud.com/nodepool-id]: invalid label value "-x": ` + badValue,
			`Error spec.units[1].podLabels[bad key]: invalid label key "bad key": ` + badKey,
		},
	}, {
		name:   "unknown try-next policy",
		mutate: func(p *ack.ResourcePolicy) { p.Spec.WhenTryNextUnits.Policy = "Never" },
		want: []string{`Error spec.whenTryNextUnits.policy: invalid value "Never": expected one of LackResourceOrExceedMax, ` +
			"ExceedMax, TimeoutOrExceedMax, LackResourceAndNoTerminating, LackResourceAndNoterminating, Timeout"},
	}, {
		name: "both spellings of LackResourceAndNoTerminating",
		mutate: func(p *ack.ResourcePolicy) {
			p.Spec.WhenTryNextUnits.Policy = ack.LackResourceAndNoterminating
		},
	}, {
		name: "timeout with TimeoutOrExceedMax",
		mutate: func(p *ack.ResourcePolicy) {
			p.Spec.WhenTryNextUnits = ack.TryNextUnitsOptions{Policy: ack.TimeoutOrExceedMax, Timeout: &metav1.Duration{Duration: time.Minute}}
		},
	}, {
		name: "zero timeout",
		mutate: func(p *ack.ResourcePolicy) {
			p.Spec.WhenTryNextUnits = ack.TryNextUnitsOptions{Policy: ack.TimeoutOrExceedMax, Timeout: &metav1.Duration{}}
		},
		want: []string{"Error spec.whenTryNextUnits.timeout: must be greater than 0, got 0s"},
	}, {
		name: "timeout with another policy",
		mutate: func(p *ack.ResourcePolicy) {
			p.Spec.WhenTryNextUnits = ack.TryNextUnitsOptions{Policy: ack.ExceedMax, Timeout: &metav1.Duration{Duration: time.Minute}}
		},
		want: []string{"Warning spec.whenTryNextUnits.timeout: ignored unless policy is TimeoutOrExceedMax"},
	}, {
		name:   "unknown preempt policy",
		mutate: func(p *ack.ResourcePolicy) { p.Spec.PreemptPolicy = "Never" },
		want:   []string{`Error spec.preemptPolicy: invalid value "Never": expected one of AfterAllUnits, BeforeNextUnit`},
	}, {
		name: "max-only settings without max",
		mutate: func(p *ack.ResourcePolicy) {
			p.Spec.Units[0].Max = nil
			p.Spec.MatchLabelKeys = []string{"pod-template-hash"}
			p.Spec.IgnorePreviousPod = ptr(true)
		},
		want: []string{
			"Warning spec.ignorePreviousPod: has no effect unless a unit sets max",
			"Warning spec.matchLabelKeys: has no effect unless a unit sets max",
		},
	}, {
		name:   "bad matchLabelKeys",
		mutate: func(p *ack.ResourcePolicy) { p.Spec.MatchLabelKeys = []string{"pod-template-hash", "bad key"} },
		want:   []string{`Error spec.matchLabelKeys[1]: invalid label key "bad key": ` + badKey},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := validPolicy()
			tt.mutate(p)
			checkDiags(t, p.Validate(), tt.want)
		})
	}
}

func TestResourcePolicySetDefaults(t *testing.T) {
	p := validPolicy()
	p.SetDefaults()
	s := p.Spec
	if s.IgnorePreviousPod == nil || *s.IgnorePreviousPod || s.IgnoreTerminatingPod == nil || !*s.IgnoreTerminatingPod {
		t.Errorf("ignorePreviousPod = %v, ignoreTerminatingPod = %v; want false, true", s.IgnorePreviousPod, s.IgnoreTerminatingPod)
	}
	if s.PreemptPolicy != ack.PreemptAfterAllUnits || s.WhenTryNextUnits.Policy != ack.LackResourceOrExceedMax || s.WhenTryNextUnits.Timeout != nil {
		t.Errorf("preemptPolicy = %q, whenTryNextUnits = %+v", s.PreemptPolicy, s.WhenTryNextUnits)
	}
	if s.Strategy != ack.StrategyPrefer {
		t.Errorf("strategy = %q", s.Strategy)
	}

	p = validPolicy()
	p.Spec.IgnoreTerminatingPod = ptr(false)
	p.Spec.WhenTryNextUnits.Policy = ack.TimeoutOrExceedMax
	p.SetDefaults()
	if *p.Spec.IgnoreTerminatingPod {
		t.Error("SetDefaults overwrote ignoreTerminatingPod false")
	}
	if to := p.Spec.WhenTryNextUnits.Timeout; to == nil || to.Duration != 15*time.Minute {
		t.Errorf("TimeoutOrExceedMax timeout = %v, want 15m", to)
	}
}
