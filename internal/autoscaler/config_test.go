package autoscaler

import (
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/serving/pkg/apis/autoscaling"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	kparesources "knative.dev/serving/pkg/reconciler/autoscaling/kpa/resources"
	aresources "knative.dev/serving/pkg/reconciler/autoscaling/resources"
)

// annotationSpread is the spread of autoscaling annotations the config and
// differential tests run: every KPA annotation, at the values that change
// behaviour (target-burst-capacity -1 and 0, rps, ...).
var annotationSpread = []struct {
	name string
	anns map[string]string
	cc   int64
}{
	{"none", nil, 0},
	{"containerConcurrency 5", nil, 5},
	{"target 10", map[string]string{"autoscaling.knative.dev/target": "10"}, 0},
	{"target above containerConcurrency", map[string]string{"autoscaling.knative.dev/target": "50"}, 8},
	{"target-utilization-percentage 50", map[string]string{"autoscaling.knative.dev/target-utilization-percentage": "50"}, 4},
	{"window 20s", map[string]string{"autoscaling.knative.dev/window": "20s"}, 0},
	{"window 6s panic-window 50%", map[string]string{
		"autoscaling.knative.dev/window": "6s", "autoscaling.knative.dev/panic-window-percentage": "50"}, 0},
	{"panic-window-percentage 1 (rounds to 1 s)", map[string]string{"autoscaling.knative.dev/panic-window-percentage": "1"}, 0},
	{"panic-threshold-percentage 110", map[string]string{"autoscaling.knative.dev/panic-threshold-percentage": "110"}, 0},
	{"panic-threshold-percentage 1000", map[string]string{"autoscaling.knative.dev/panic-threshold-percentage": "1000"}, 2},
	{"activation-scale 3", map[string]string{"autoscaling.knative.dev/activation-scale": "3"}, 0},
	{"scale-down-delay 30s", map[string]string{"autoscaling.knative.dev/scale-down-delay": "30s"}, 0},
	{"target-burst-capacity -1", map[string]string{"autoscaling.knative.dev/target-burst-capacity": "-1"}, 0},
	{"target-burst-capacity 0", map[string]string{"autoscaling.knative.dev/target-burst-capacity": "0"}, 10},
	{"target-burst-capacity 50", map[string]string{"autoscaling.knative.dev/target-burst-capacity": "50"}, 10},
	{"metric rps", map[string]string{"autoscaling.knative.dev/metric": "rps"}, 0},
	{"metric rps target 30", map[string]string{"autoscaling.knative.dev/metric": "rps", "autoscaling.knative.dev/target": "30"}, 4},
	{"weighted-exponential", map[string]string{"autoscaling.knative.dev/metric-aggregation-algorithm": "weighted-exponential"}, 0},
	{"weightedExponential (legacy)", map[string]string{"autoscaling.knative.dev/metric-aggregation-algorithm": "weightedExponential"}, 0},
	{"min 2 max 5 initial 3", map[string]string{
		"autoscaling.knative.dev/min-scale": "2", "autoscaling.knative.dev/max-scale": "5", "autoscaling.knative.dev/initial-scale": "3"}, 0},
	{"initial-scale 0", map[string]string{"autoscaling.knative.dev/initial-scale": "0"}, 0},
	{"pod retention 40s", map[string]string{"autoscaling.knative.dev/scale-to-zero-pod-retention-period": "40s"}, 0},
	{"progress-deadline 90s", map[string]string{"serving.knative.dev/progress-deadline": "90s"}, 0},
	{"class kpa explicit", map[string]string{"autoscaling.knative.dev/class": "kpa.autoscaling.knative.dev"}, 0},
	{"everything", map[string]string{
		"autoscaling.knative.dev/target":                             "7",
		"autoscaling.knative.dev/target-utilization-percentage":      "80",
		"autoscaling.knative.dev/window":                             "30s",
		"autoscaling.knative.dev/panic-window-percentage":            "20",
		"autoscaling.knative.dev/panic-threshold-percentage":         "150",
		"autoscaling.knative.dev/activation-scale":                   "2",
		"autoscaling.knative.dev/scale-down-delay":                   "10s",
		"autoscaling.knative.dev/target-burst-capacity":              "20",
		"autoscaling.knative.dev/metric-aggregation-algorithm":       "weighted-exponential",
		"autoscaling.knative.dev/min-scale":                          "1",
		"autoscaling.knative.dev/max-scale":                          "9",
		"autoscaling.knative.dev/scale-to-zero-pod-retention-period": "5s",
	}, 6},
}

// clusterSpread are config-autoscaler variants, including the rate limits
// that are only cluster-wide.
var clusterSpread = []struct {
	name string
	data map[string]string
}{
	{"defaults", nil},
	{"rates and windows", map[string]string{
		"max-scale-up-rate": "1.5", "max-scale-down-rate": "4", "stable-window": "30s",
		"panic-window-percentage": "25", "panic-threshold-percentage": "300",
	}},
	{"targets", map[string]string{
		"container-concurrency-target-default": "20", "container-concurrency-target-percentage": "50",
		"requests-per-second-target-default": "80", "target-burst-capacity": "0",
	}},
	{"zero", map[string]string{
		"allow-zero-initial-scale": "true", "initial-scale": "0", "scale-to-zero-grace-period": "10s",
		"scale-to-zero-pod-retention-period": "20s", "scale-down-delay": "4s",
	}},
	{"bounds", map[string]string{"min-scale": "1", "max-scale": "20", "max-scale-limit": "50", "enable-scale-to-zero": "false"}},
}

func knativePA(cc *ClusterConfig, rev RevisionParams) *autoscalingv1alpha1.PodAutoscaler {
	pa := podAutoscaler(cc, rev)
	pa.ObjectMeta = metav1.ObjectMeta{Namespace: "default", Name: "model-00001", Annotations: pa.Annotations}
	return pa
}

// TestConfigMatchesKnative resolves each annotation and config-autoscaler
// variant with NewConfig and with Knative's own reconciler resources
// (MakeDecider, MakeMetric, ScaleBounds, GetInitialScale) and compares.
func TestConfigMatchesKnative(t *testing.T) {
	for _, cl := range clusterSpread {
		cc, err := ParseClusterConfig(cl.data)
		if err != nil {
			t.Fatalf("%s: %v", cl.name, err)
		}
		for _, a := range annotationSpread {
			for _, reachable := range []bool{true, false} {
				name := cl.name + "/" + a.name
				if !reachable {
					name += "/unreachable"
				}
				rev := RevisionParams{Annotations: a.anns, ContainerConcurrency: a.cc, Reachable: reachable}
				cfg, err := NewConfig(cc, rev)
				if a.anns["autoscaling.knative.dev/initial-scale"] == "0" && !cc.AllowZeroInitialScale {
					if !errors.Is(err, ErrInvalidAnnotations) {
						t.Errorf("%s: err = %v, want ErrInvalidAnnotations (initial-scale 0 not allowed)", name, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				pa := knativePA(cc, rev)
				kd := kparesources.MakeDecider(pa, cc).Spec
				if got := knativeSpec(cfg.Decider); *got != kd {
					t.Errorf("%s: decider spec\n got %+v\nwant %+v", name, *got, kd)
				}
				km := aresources.MakeMetric(pa, "svc-private", cc)
				if cfg.Metrics.StableWindow != km.Spec.StableWindow || cfg.Metrics.PanicWindow != km.Spec.PanicWindow {
					t.Errorf("%s: windows %v/%v, want %v/%v", name, cfg.Metrics.StableWindow, cfg.Metrics.PanicWindow,
						km.Spec.StableWindow, km.Spec.PanicWindow)
				}
				_, alg, _ := autoscaling.MetricAggregationAlgorithmAnnotation.Get(pa.Annotations)
				if wantWE := alg == autoscaling.MetricAggregationAlgorithmWeightedExponential ||
					alg == autoscaling.MetricAggregationAlgorithmWeightedExponentialAlt; (cfg.Metrics.Algorithm == WeightedExponential) != wantWE {
					t.Errorf("%s: algorithm %v for annotation %q", name, cfg.Metrics.Algorithm, alg)
				}
				if cfg.Metrics.Metric != Metric(pa.Metric()) || cfg.Metrics.ReportNoData != (kd.TargetBurstCapacity != -1) {
					t.Errorf("%s: metric %v no-data %v", name, cfg.Metrics.Metric, cfg.Metrics.ReportNoData)
				}
				lo, hi := pa.ScaleBounds(cc)
				if cfg.Scaler.MinScale != lo || cfg.Scaler.MaxScale != hi {
					t.Errorf("%s: bounds %d..%d, want %d..%d", name, cfg.Scaler.MinScale, cfg.Scaler.MaxScale, lo, hi)
				}
				if want := kparesources.GetInitialScale(cc, pa); cfg.Scaler.InitialScale != want {
					t.Errorf("%s: initial scale %d, want %d", name, cfg.Scaler.InitialScale, want)
				}
				// kpa/scaler.go's lastPodRetention, ignoring reachability,
				// which the scaler applies itself.
				retention := cc.ScaleToZeroPodRetentionPeriod
				if d, ok := pa.ScaleToZeroPodRetention(); ok {
					retention = d
				}
				if cfg.Scaler.ScaleToZeroPodRetention != retention || cfg.Scaler.ScaleToZeroGracePeriod != cc.ScaleToZeroGracePeriod ||
					cfg.Scaler.EnableScaleToZero != cc.EnableScaleToZero || cfg.Scaler.StableWindow != kd.StableWindow {
					t.Errorf("%s: scale-to-zero spec %+v", name, cfg.Scaler)
				}
				deadline := DefaultProgressDeadline
				if d, ok := pa.ProgressDeadline(); ok {
					deadline = d
				}
				if cfg.Scaler.ActivationTimeout != deadline+30*time.Second {
					t.Errorf("%s: activation timeout %v, want %v", name, cfg.Scaler.ActivationTimeout, deadline+30*time.Second)
				}
			}
		}
	}
}

func TestConfigRejects(t *testing.T) {
	tests := []struct {
		name    string
		anns    map[string]string
		wantErr error
		wantMsg string
	}{
		{"hpa class", map[string]string{"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev", "autoscaling.knative.dev/metric": "cpu"},
			ErrNotKPA, "infera implements only the KPA"},
		{"unknown class", map[string]string{"autoscaling.knative.dev/class": "example.com/custom"}, ErrNotKPA, `"example.com/custom"`},
		{"target 0", map[string]string{"autoscaling.knative.dev/target": "0"}, ErrInvalidAnnotations, "target"},
		{"window too short", map[string]string{"autoscaling.knative.dev/window": "2s"}, ErrInvalidAnnotations, "window"},
		{"min above max", map[string]string{"autoscaling.knative.dev/min-scale": "5", "autoscaling.knative.dev/max-scale": "2"}, ErrInvalidAnnotations, "min-scale"},
		{"kpa with cpu", map[string]string{"autoscaling.knative.dev/metric": "cpu"}, ErrInvalidAnnotations, "metric"},
		{"bad tbc", map[string]string{"autoscaling.knative.dev/target-burst-capacity": "-2"}, ErrInvalidAnnotations, "target-burst-capacity"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewConfig(DefaultClusterConfig(), RevisionParams{Annotations: tc.anns, Reachable: true})
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("err = %v, want %v mentioning %q", err, tc.wantErr, tc.wantMsg)
			}
		})
	}
}

func TestParseClusterConfig(t *testing.T) {
	if _, err := ParseClusterConfig(map[string]string{"max-scale-up-rate": "0.5"}); err == nil {
		t.Error("max-scale-up-rate 0.5 accepted; Knative requires > 1")
	}
	cc, err := ParseClusterConfig(map[string]string{"stable-window": "90s"})
	if err != nil || cc.StableWindow != 90*time.Second {
		t.Errorf("stable-window: %v, %v", cc, err)
	}
	d := DefaultClusterConfig()
	// The defaults DESIGN.md promises, as Knative has them.
	if d.StableWindow != 60*time.Second || d.PanicWindowPercentage != 10 || d.PanicThresholdPercentage != 200 ||
		d.MaxScaleUpRate != 1000 || d.MaxScaleDownRate != 2 || d.ContainerConcurrencyTargetFraction != 0.7 ||
		d.ContainerConcurrencyTargetDefault != 100 || d.RPSTargetDefault != 200 || d.TargetBurstCapacity != 211 ||
		d.ScaleToZeroGracePeriod != 30*time.Second || !d.EnableScaleToZero || d.InitialScale != 1 {
		t.Errorf("defaults: %+v", d)
	}
}
