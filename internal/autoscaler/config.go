package autoscaler

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/serving/pkg/apis/autoscaling"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	asconfig "knative.dev/serving/pkg/autoscaler/config"
	"knative.dev/serving/pkg/autoscaler/config/autoscalerconfig"
)

// ClusterConfig is the config-autoscaler ConfigMap, parsed, defaulted and
// validated by Knative's own parser (knative.dev/serving/pkg/autoscaler/config).
type ClusterConfig = autoscalerconfig.Config

// Sentinel errors of NewConfig.
var (
	// ErrNotKPA: the revision's autoscaling class is not the KPA. infera
	// implements only Knative's KPA (kpa.autoscaling.knative.dev); the HPA
	// class (hpa.autoscaling.knative.dev, CPU or memory through a Kubernetes
	// HorizontalPodAutoscaler) is not implemented.
	ErrNotKPA = errors.New("autoscaler: infera implements only the KPA (autoscaling.knative.dev/class: kpa.autoscaling.knative.dev)")
	// ErrInvalidAnnotations: an autoscaling annotation fails Knative's
	// validation (the webhook's rules).
	ErrInvalidAnnotations = errors.New("autoscaler: invalid autoscaling annotations")
)

const (
	// DefaultProgressDeadline is config-deployment's progress-deadline default.
	DefaultProgressDeadline = 600 * time.Second
	// activationTimeoutBuffer is what Knative adds to the progress deadline
	// before it gives up on activating a revision.
	activationTimeoutBuffer = 30 * time.Second

	progressDeadlineAnnotation = "serving.knative.dev/progress-deadline"
)

// ParseClusterConfig parses config-autoscaler's data with every Knative key
// and default; nil data gives the defaults.
func ParseClusterConfig(data map[string]string) (*ClusterConfig, error) {
	c, err := asconfig.NewConfigFromMap(data)
	if err != nil {
		return nil, fmt.Errorf("autoscaler: config-autoscaler: %w", err)
	}
	return c, nil
}

// DefaultClusterConfig is config-autoscaler with nothing set.
func DefaultClusterConfig() *ClusterConfig {
	c, err := asconfig.NewConfigFromMap(nil)
	if err != nil {
		panic(err) // Knative's defaults validate
	}
	return c
}

// RevisionParams is what a revision contributes to its autoscaling.
type RevisionParams struct {
	// Annotations are the revision's (its template's) annotations.
	Annotations map[string]string
	// ContainerConcurrency is spec.containerConcurrency; 0 is unlimited.
	ContainerConcurrency int64
	// Reachable: a route sends traffic to the revision (Knative's routing
	// state "active"; an unknown state counts as reachable, "reserve" not).
	Reachable bool
	// ProgressDeadline is config-deployment's progress-deadline; 0 means its
	// default, 600 s. The revision's serving.knative.dev/progress-deadline
	// annotation takes precedence.
	ProgressDeadline time.Duration
}

// Config is everything that scales one revision, resolved from
// config-autoscaler and the revision.
type Config struct {
	// Class is the autoscaling class (always the KPA's when NewConfig succeeds).
	Class   string
	Metrics MetricSpec
	Decider Spec
	Scaler  ScalerSpec
}

// NewConfig resolves a revision's autoscaling as Knative's revision and KPA
// reconcilers do (resources.MakePA, kpa/resources.MakeDecider,
// autoscaling/resources.MakeMetric, ScaleBounds, GetInitialScale), reading the
// annotations with Knative's own helpers. The target is containerConcurrency,
// or the target annotation (no higher than containerConcurrency), or
// container-concurrency-target-default (rps: requests-per-second-target-default),
// times the utilization, and never below 0.01.
func NewConfig(cc *ClusterConfig, rev RevisionParams) (Config, error) {
	if fe := autoscaling.ValidateAnnotations(context.Background(), cc, rev.Annotations); fe != nil {
		return Config{}, fmt.Errorf("%w: %v", ErrInvalidAnnotations, fe)
	}
	pa := podAutoscaler(cc, rev)
	if pa.Class() != autoscaling.KPA {
		return Config{}, fmt.Errorf("%w: class %q is not implemented", ErrNotKPA, pa.Class())
	}

	stableWindow := cc.StableWindow
	if w, ok := pa.Window(); ok {
		stableWindow = w
	}
	panicPct := cc.PanicWindowPercentage
	if p, ok := pa.PanicWindowPercentage(); ok {
		panicPct = p
	}
	panicWindow := max(time.Duration(float64(stableWindow)*panicPct/100).Round(time.Second), BucketSize)

	tbc := cc.TargetBurstCapacity
	if v, ok := pa.TargetBC(); ok {
		tbc = v
	}
	algorithm := Linear
	if _, a, ok := autoscaling.MetricAggregationAlgorithmAnnotation.Get(pa.Annotations); ok {
		algorithm = ParseAlgorithm(a)
	}
	metric := Metric(pa.Metric())

	panicThresholdPct := cc.PanicThresholdPercentage
	if v, ok := pa.PanicThresholdPercentage(); ok {
		panicThresholdPct = v
	}
	scaleDownDelay := cc.ScaleDownDelay
	if v, ok := pa.ScaleDownDelay(); ok {
		scaleDownDelay = v
	}
	var activationScale int32
	if v, ok := pa.ActivationScale(); ok {
		activationScale = v
	}
	initialScale := initialScale(cc, pa)
	target, total := metricTarget(cc, pa)

	minScale, maxScale := pa.ScaleBounds(cc)
	retention := cc.ScaleToZeroPodRetentionPeriod
	if v, ok := pa.ScaleToZeroPodRetention(); ok {
		retention = v
	}
	progressDeadline := rev.ProgressDeadline
	if progressDeadline == 0 {
		progressDeadline = DefaultProgressDeadline
	}
	if v, ok := pa.ProgressDeadline(); ok {
		progressDeadline = v
	}

	return Config{
		Class: pa.Class(),
		Metrics: MetricSpec{
			Metric:       metric,
			StableWindow: stableWindow,
			PanicWindow:  panicWindow,
			Algorithm:    algorithm,
			ReportNoData: tbc != -1,
		},
		Decider: Spec{
			MaxScaleUpRate:      cc.MaxScaleUpRate,
			MaxScaleDownRate:    cc.MaxScaleDownRate,
			ScalingMetric:       metric,
			TargetValue:         target,
			TotalValue:          total,
			TargetBurstCapacity: tbc,
			ActivatorCapacity:   cc.ActivatorCapacity,
			PanicThreshold:      panicThresholdPct / 100,
			StableWindow:        stableWindow,
			ScaleDownDelay:      scaleDownDelay,
			InitialScale:        initialScale,
			Reachable:           rev.Reachable,
			ActivationScale:     activationScale,
		},
		Scaler: ScalerSpec{
			MinScale:                minScale,
			MaxScale:                maxScale,
			InitialScale:            initialScale,
			Reachable:               rev.Reachable,
			EnableScaleToZero:       cc.EnableScaleToZero,
			StableWindow:            stableWindow,
			ScaleToZeroGracePeriod:  cc.ScaleToZeroGracePeriod,
			ScaleToZeroPodRetention: retention,
			ActivationTimeout:       progressDeadline + activationTimeoutBuffer,
		},
	}, nil
}

// podAutoscaler is the PodAutoscaler Knative's revision reconciler would make
// for rev: its annotations, with the class defaulted from the cluster config.
func podAutoscaler(cc *ClusterConfig, rev RevisionParams) *autoscalingv1alpha1.PodAutoscaler {
	anns := make(map[string]string, len(rev.Annotations)+1)
	for k, v := range rev.Annotations {
		anns[k] = v
	}
	if _, ok := anns[autoscaling.ClassAnnotationKey]; !ok && cc.PodAutoscalerClass != "" {
		anns[autoscaling.ClassAnnotationKey] = cc.PodAutoscalerClass
	}
	reach := autoscalingv1alpha1.ReachabilityReachable
	if !rev.Reachable {
		reach = autoscalingv1alpha1.ReachabilityUnreachable
	}
	return &autoscalingv1alpha1.PodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Annotations: anns},
		Spec: autoscalingv1alpha1.PodAutoscalerSpec{
			ContainerConcurrency: rev.ContainerConcurrency,
			Reachability:         reach,
		},
	}
}

// initialScale is the revision's initial-scale annotation, unless absent or
// a 0 the cluster does not allow, then config-autoscaler's initial-scale.
func initialScale(cc *ClusterConfig, pa *autoscalingv1alpha1.PodAutoscaler) int32 {
	if v, ok := pa.InitialScale(); ok && (v != 0 || cc.AllowZeroInitialScale) {
		return v
	}
	return cc.InitialScale
}

// metricTarget is the per-pod target and total of the scaling metric.
func metricTarget(cc *ClusterConfig, pa *autoscalingv1alpha1.PodAutoscaler) (target, total float64) {
	var utilization float64
	if pa.Metric() == autoscaling.RPS {
		total = cc.RPSTargetDefault
		utilization = cc.TargetUtilization
	} else {
		total = float64(pa.Spec.ContainerConcurrency)
		if total == 0 {
			total = cc.ContainerConcurrencyTargetDefault
		}
		utilization = cc.ContainerConcurrencyTargetFraction
	}
	if t, ok := pa.Target(); ok {
		total = t
		if pa.Metric() == autoscaling.Concurrency && pa.Spec.ContainerConcurrency != 0 {
			// Never aim above what a pod admits.
			total = math.Min(t, float64(pa.Spec.ContainerConcurrency))
		}
	}
	if u, ok := pa.TargetUtilization(); ok {
		utilization = u
	}
	return math.Max(autoscaling.TargetMin, total*utilization), total
}
