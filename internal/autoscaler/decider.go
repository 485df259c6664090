package autoscaler

import (
	"math"
	"time"
)

// TickInterval is how often Knative's autoscaler evaluates a decider. The
// scale-down-delay window is kept in buckets of this size, so it is part of
// the decision semantics even though the tick loop is not in this package.
const TickInterval = 2 * time.Second

// Spec is what a Decider decides with: Knative v0.50.0's scaling.DeciderSpec.
type Spec struct {
	// MaxScaleUpRate bounds a tick's scale-up to ceil(rate × ready).
	MaxScaleUpRate float64
	// MaxScaleDownRate bounds a tick's scale-down to floor(ready / rate).
	MaxScaleDownRate float64
	ScalingMetric    Metric
	// TargetValue is the metric per pod to aim for; TotalValue what one pod
	// can take at most (TargetValue <= TotalValue).
	TargetValue float64
	TotalValue  float64
	// TargetBurstCapacity is the spare capacity to keep on top of the panic
	// load: -1 unlimited (always behind the activator), 0 none.
	TargetBurstCapacity float64
	// ActivatorCapacity is one activator's capacity (Knative's activator
	// subsetting; carried for parity, unused by the decision).
	ActivatorCapacity float64
	// PanicThreshold is the panic-window desired/ready ratio that starts
	// panic mode (panic-threshold-percentage / 100).
	PanicThreshold float64
	// StableWindow is also how long panic mode outlasts its last crossing.
	StableWindow time.Duration
	// ScaleDownDelay holds scale-downs back: the recommendation is the
	// maximum over this long. Fixed when the Decider is made (see Update).
	ScaleDownDelay time.Duration
	InitialScale   int32
	// Reachable: the revision is routed to. An unreachable revision is not
	// bounded in its scale-down and ignores ScaleDownDelay.
	Reachable bool
	// ActivationScale, when above 1, is the least non-zero recommendation.
	ActivationScale int32
}

// Recommendation is one tick's outcome: Knative's scaling.ScaleResult, plus
// the decider's state and inputs, for metrics and the dashboard.
type Recommendation struct {
	DesiredPodCount     int32
	ExcessBurstCapacity int32
	// ScaleValid is false when there was no data to decide on: the
	// recommendation must be ignored (Knative keeps its previous one).
	ScaleValid bool
	// PanicMode is the decider's mode after this tick.
	PanicMode bool

	ObservedStable, ObservedPanic float64
	TargetValue                   float64
	// DesiredStablePodCount and DesiredPanicPodCount are the two candidates
	// after the rate limits and the activation scale.
	DesiredStablePodCount, DesiredPanicPodCount int32
}

// Decider is one revision's KPA decision state: Knative v0.50.0's
// scaling.autoscaler without its metric client, pod counter, lock and
// OpenTelemetry gauges. It is not safe for concurrent use.
type Decider struct {
	spec Spec
	// panicTime is the last tick the panic threshold was crossed; zero when
	// not in panic mode.
	panicTime time.Time
	// maxPanicPods is the highest recommendation made in this panic episode.
	maxPanicPods int32
	// delay is the scale-down-delay window; nil when there is no delay.
	delay *maxWindow
}

// NewDecider starts a decider for a revision that has readyPods ready now.
// Like Knative, a decider that starts with more than one ready pod starts in
// panic mode holding that many pods, so that a restarted autoscaler, with no
// history yet, does not scale a busy revision down.
func NewDecider(spec Spec, readyPods int, now time.Time) *Decider {
	d := &Decider{}
	d.init(spec, readyPods, now)
	return d
}

func (d *Decider) init(spec Spec, readyPods int, now time.Time) {
	*d = Decider{spec: spec, maxPanicPods: int32(readyPods)}
	if readyPods > 1 {
		d.panicTime = now
	}
	if spec.ScaleDownDelay > 0 {
		d.delay = newMaxWindow(spec.ScaleDownDelay, TickInterval)
	}
}

// Spec is the spec in force.
func (d *Decider) Spec() Spec { return d.spec }

// Update replaces the spec. As in Knative, the scale-down-delay window is
// made with the decider and is not remade here: a decider made without a
// delay keeps having none, and one made with a delay keeps its length.
func (d *Decider) Update(spec Spec) { d.spec = spec }

// PanicMode reports whether the decider is in panic mode.
func (d *Decider) PanicMode() bool { return !d.panicTime.IsZero() }

// Scale decides the pod count for now, given readyPods ready pods and the
// observed load. It is Knative's autoscaler.Scale, decision for decision.
func (d *Decider) Scale(now time.Time, readyPods int, obs Observation) Recommendation {
	spec := &d.spec
	if obs.NoData {
		return Recommendation{PanicMode: d.PanicMode(), TargetValue: spec.TargetValue}
	}
	// The ratios treat zero ready pods as one.
	ready := math.Max(1, float64(readyPods))

	// Rate limits; the scale-up one is rounded up so a small rate still
	// allows one more pod.
	maxUp := math.Ceil(spec.MaxScaleUpRate * ready)
	maxDown := 0.
	if spec.Reachable {
		maxDown = math.Floor(ready / spec.MaxScaleDownRate)
	}

	wantStable := math.Ceil(obs.Stable / spec.TargetValue)
	wantPanic := math.Ceil(obs.Panic / spec.TargetValue)
	stablePods := int32(math.Min(math.Max(wantStable, maxDown), maxUp))
	panicPods := int32(math.Min(math.Max(wantPanic, maxDown), maxUp))
	if spec.ActivationScale > 1 {
		if wantStable > 0 && spec.ActivationScale > stablePods {
			stablePods = spec.ActivationScale
		}
		if wantPanic > 0 && spec.ActivationScale > panicPods {
			panicPods = spec.ActivationScale
		}
	}

	// Panic mode: entered, or extended, on every tick the panic-window load
	// needs PanicThreshold times the ready pods; left a stable window after
	// the last such tick.
	if wantPanic/ready >= spec.PanicThreshold {
		d.panicTime = now
	} else if d.PanicMode() && d.panicTime.Add(spec.StableWindow).Before(now) {
		d.panicTime = time.Time{}
		d.maxPanicPods = 0
	}

	desired := stablePods
	if d.PanicMode() {
		// Provision for the larger of the two, and never go down while
		// panicking.
		desired = max(desired, panicPods, d.maxPanicPods)
		d.maxPanicPods = desired
	}

	if spec.Reachable && d.delay != nil {
		desired = d.delay.record(now, desired)
	}

	// Excess burst capacity, on the panic load: what the ready pods can take
	// beyond the load and the burst capacity asked for.
	ebc := -1.
	switch {
	case spec.TargetBurstCapacity == 0:
		ebc = 0
	case spec.TargetBurstCapacity > 0:
		capacity := float64(readyPods) * spec.TotalValue
		ebc = math.Floor(capacity - spec.TargetBurstCapacity - obs.Panic)
	}

	return Recommendation{
		DesiredPodCount:       desired,
		ExcessBurstCapacity:   int32(ebc),
		ScaleValid:            true,
		PanicMode:             d.PanicMode(),
		ObservedStable:        obs.Stable,
		ObservedPanic:         obs.Panic,
		TargetValue:           spec.TargetValue,
		DesiredStablePodCount: stablePods,
		DesiredPanicPodCount:  panicPods,
	}
}

// maxWindow is the maximum of the values recorded over the last size
// buckets of granularity each (Knative's max.TimeWindow): a monotonic deque
// in a ring, so recording is amortised O(1).
type maxWindow struct {
	entries     []maxEntry // ring; values strictly decrease from first on
	first, n    int
	granularity int64 // seconds
}

type maxEntry struct {
	index int64
	value int32
}

func newMaxWindow(d, granularity time.Duration) *maxWindow {
	size := int(math.Ceil(float64(d) / float64(granularity)))
	return &maxWindow{entries: make([]maxEntry, size), granularity: int64(granularity / time.Second)}
}

func (w *maxWindow) at(i int) *maxEntry { return &w.entries[(w.first+i)%len(w.entries)] }

// record adds v at now's bucket and returns the window's maximum.
func (w *maxWindow) record(now time.Time, v int32) int32 {
	idx := now.Unix() / w.granularity
	if w.n > 0 {
		// Time ran backwards: count it as the newest bucket. (Knative's
		// window panics when that overflows its buffer.)
		idx = max(idx, w.at(w.n-1).index)
	}
	// Newer entries no larger than v can never be the maximum again.
	for w.n > 0 && w.at(w.n-1).value <= v {
		w.n--
	}
	// Entries older than the window leave from the front.
	for w.n > 0 && idx-w.at(0).index >= int64(len(w.entries)) {
		w.first = (w.first + 1) % len(w.entries)
		w.n--
	}
	// A second value for the same bucket keeps the larger.
	if w.n > 0 {
		if last := w.at(w.n - 1); last.index == idx {
			v = max(v, last.value)
			w.n--
		}
	}
	*w.at(w.n) = maxEntry{index: idx, value: v}
	w.n++
	return w.at(0).value
}
