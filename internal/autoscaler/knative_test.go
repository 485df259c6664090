package autoscaler

// The differential test: our Metrics+Decider against Knative v0.50.0's
// scaling.autoscaler fed by Knative's real MetricCollector, on the same
// stats, ready pods and clock, compared on every tick.

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric/noop"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"knative.dev/serving/pkg/apis/autoscaling"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	kmetrics "knative.dev/serving/pkg/autoscaler/metrics"
	"knative.dev/serving/pkg/autoscaler/scaling"
	kparesources "knative.dev/serving/pkg/reconciler/autoscaling/kpa/resources"
	aresources "knative.dev/serving/pkg/reconciler/autoscaling/resources"
)

var testKey = types.NamespacedName{Namespace: "default", Name: "model-00001"}

// fakePodCounter is the ready pod count both deciders see
// (resources.EndpointsCounter).
type fakePodCounter struct{ ready int }

func (f *fakePodCounter) ReadyCount() (int, error)    { return f.ready, nil }
func (f *fakePodCounter) NotReadyCount() (int, error) { return 0, nil }

// emptyScraper is a scraper that never has anything: the stats come in
// through MetricCollector.Record, as the activator's do.
type emptyScraper struct{}

func (emptyScraper) Scrape(time.Duration) (kmetrics.Stat, error) { return kmetrics.Stat{}, nil }

// knative is Knative's side of the comparison.
type knative struct {
	collector *kmetrics.MetricCollector
	scaler    scaling.UniScaler
	logs      *observer.ObservedLogs
	logger    *zap.SugaredLogger
	pods      *fakePodCounter
	panic     bool
}

func knativeMetric(ms MetricSpec) *autoscalingv1alpha1.Metric {
	m := &autoscalingv1alpha1.Metric{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: testKey.Namespace, Name: testKey.Name,
			Annotations: map[string]string{autoscaling.MetricAggregationAlgorithmKey: ms.Algorithm.String()},
		},
		Spec: autoscalingv1alpha1.MetricSpec{StableWindow: ms.StableWindow, PanicWindow: ms.PanicWindow},
	}
	if ms.ReportNoData {
		m.Spec.ScrapeTarget = testKey.Name + "-private"
	}
	return m
}

func knativeSpec(s Spec) *scaling.DeciderSpec {
	return &scaling.DeciderSpec{
		MaxScaleUpRate:      s.MaxScaleUpRate,
		MaxScaleDownRate:    s.MaxScaleDownRate,
		ScalingMetric:       string(s.ScalingMetric),
		TargetValue:         s.TargetValue,
		TotalValue:          s.TotalValue,
		TargetBurstCapacity: s.TargetBurstCapacity,
		ActivatorCapacity:   s.ActivatorCapacity,
		PanicThreshold:      s.PanicThreshold,
		StableWindow:        s.StableWindow,
		ScaleDownDelay:      s.ScaleDownDelay,
		InitialScale:        s.InitialScale,
		Reachable:           s.Reachable,
		ActivationScale:     s.ActivationScale,
	}
}

// newKnative makes Knative's side and returns the times just before and
// just after its autoscaler was made: it stamps an initial panic mode with
// time.Now() in between.
// kspec and km, when not nil, are Knative's own resolution of the revision
// (MakeDecider, MakeMetric) to use instead of ours.
func newKnative(t testing.TB, ms MetricSpec, spec Spec, ready int, kspec *scaling.DeciderSpec, km *autoscalingv1alpha1.Metric) (*knative, time.Time, time.Time) {
	if kspec == nil {
		kspec = knativeSpec(spec)
	}
	if km == nil {
		km = knativeMetric(ms)
	}
	factory := func(m *autoscalingv1alpha1.Metric, _ *zap.SugaredLogger) (kmetrics.StatsScraper, error) {
		if m.Spec.ScrapeTarget == "" {
			return nil, nil // as Knative's factory: nothing to scrape
		}
		return emptyScraper{}, nil
	}
	k := &knative{
		collector: kmetrics.NewMetricCollector(factory, zap.NewNop().Sugar()),
		pods:      &fakePodCounter{ready: ready},
		panic:     ready > 1, // a new autoscaler starts in panic mode above one pod
	}
	if err := k.collector.CreateOrUpdate(km); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.collector.Delete(testKey.Namespace, testKey.Name) })
	core, logs := observer.New(zapcore.DebugLevel)
	k.logs, k.logger = logs, zap.New(core).Sugar()
	t0 := time.Now()
	k.scaler = scaling.New(attribute.NewSet(), noop.NewMeterProvider(),
		testKey.Namespace, testKey.Name, k.collector, k.pods, kspec)
	return k, t0, time.Now()
}

func (k *knative) record(now time.Time, s Stat) {
	k.collector.Record(testKey, now, kmetrics.Stat{
		AverageConcurrentRequests: s.Concurrency,
		RequestCount:              s.Requests,
	})
}

// scale runs Knative's Scale and reads its panic mode off its log: every
// valid tick logs "Operating in panic mode." or "Operating in stable mode."
// at debug level, and the transitions log "PANICKING." and "Un-panicking."
// (its panic gauge is only exported through OpenTelemetry).
func (k *knative) scale(t testing.TB, now time.Time) scaling.ScaleResult {
	r := k.scaler.Scale(k.logger, now)
	var operating string
	for _, e := range k.logs.TakeAll() {
		switch e.Message {
		case "PANICKING.":
			k.panic = true
		case "Un-panicking.":
			k.panic = false
		case "Operating in panic mode.", "Operating in stable mode.":
			operating = e.Message
		}
	}
	if r.ScaleValid && (operating == "Operating in panic mode.") != k.panic {
		t.Fatalf("Knative's log disagrees with itself: %q after transitions say panic=%v", operating, k.panic)
	}
	return r
}

func (k *knative) update(ms MetricSpec, spec Spec) {
	k.scaler.Update(knativeSpec(spec))
	_ = k.collector.CreateOrUpdate(knativeMetric(ms))
}

// load is a scenario's load at a second: concurrency, and whether the
// gateway reports anything at all that second.
type load func(sec int, rng *rand.Rand) (c float64, report bool)

// scenario is one run of the differential test.
type scenario struct {
	name    string
	metrics MetricSpec
	spec    Spec
	ready   int // ready pods at the start
	seconds int
	load    load
	// jitter: several stats per second, at random points within it, and
	// an irregular extra tick now and then.
	jitter bool
	// updates: spec changes (and window resizes) during the run.
	updates bool
	// kspec and kmetric: Knative's side resolved by Knative (nil: from ours).
	kspec   *scaling.DeciderSpec
	kmetric *autoscalingv1alpha1.Metric
}

// coverage counts what the compared ticks went through.
type coverage struct {
	ticks, panicking, invalid, zero, activation, delayed, ebcNegative, readyZero int
}

func (c coverage) String() string {
	return fmt.Sprintf("%d ticks compared: %d in panic mode, %d without data, %d wanting zero, "+
		"%d lifted to activation-scale, %d held by scale-down-delay, %d with negative burst capacity, %d with no ready pod",
		c.ticks, c.panicking, c.invalid, c.zero, c.activation, c.delayed, c.ebcNegative, c.readyZero)
}

// run plays sc against both and adds what it compared to cov.
func (sc scenario) run(t *testing.T, rng *rand.Rand, cov *coverage) {
	t.Helper()
	// Knative's autoscaler stamps its initial panic mode with time.Now(),
	// somewhere in [t0, t1]; ours is stamped t0. No tick may fall in
	// [t0, t1] (plus a margin) plus a whole number of seconds, so that both
	// see the same side of stamp + stable window. The series starts in the
	// second of the next even Unix second, start (so that it falls into
	// one-second buckets and two-second delay buckets the same way on every
	// run), at least 50 ms after t0; at the whole second, or half a second
	// into it when the whole second is too close after t0 plus whole
	// seconds (ticks are at start plus whole seconds). Irregular ticks too
	// close are moved back out of the zone.
	k, t0, t1 := newKnative(t, sc.metrics, sc.spec, sc.ready, sc.kspec, sc.kmetric)
	zone := t1.Sub(t0) + 10*time.Millisecond
	ours := NewDecider(sc.spec, sc.ready, t0)
	start := time.Unix(t0.Unix()/2*2+2, 0)
	if start.Sub(t0) < 50*time.Millisecond {
		start = start.Add(2 * time.Second)
	}
	if start.Sub(t0)%time.Second < zone {
		start = start.Add(500 * time.Millisecond)
	}
	safe := func(at time.Time) time.Time {
		if at.Sub(t0)%time.Second < zone {
			return at.Add(-zone - 5*time.Millisecond)
		}
		return at
	}
	m := NewMetrics(sc.metrics)

	ready, desired := sc.ready, int32(max(sc.ready, 1))
	spec, ms := sc.spec, sc.metrics
	tick := func(now time.Time) {
		k.pods.ready = ready
		want := k.scale(t, now)
		got := ours.Scale(now, ready, m.Observe(now))
		cov.ticks++
		switch {
		case !got.ScaleValid:
			cov.invalid++
		case got.PanicMode:
			cov.panicking++
		}
		if got.ScaleValid && got.DesiredPodCount == 0 {
			cov.zero++
		}
		if got.ScaleValid && spec.ActivationScale > 1 && got.DesiredStablePodCount == spec.ActivationScale &&
			math.Ceil(got.ObservedStable/spec.TargetValue) < float64(spec.ActivationScale) {
			cov.activation++
		}
		if got.ScaleValid && !got.PanicMode && got.DesiredPodCount > got.DesiredStablePodCount {
			cov.delayed++
		}
		if got.ExcessBurstCapacity < 0 {
			cov.ebcNegative++
		}
		if ready == 0 {
			cov.readyZero++
		}
		if got.DesiredPodCount != want.DesiredPodCount || got.ExcessBurstCapacity != want.ExcessBurstCapacity ||
			got.ScaleValid != want.ScaleValid || got.PanicMode != k.panic {
			obs := m.Observe(now)
			t.Fatalf("%s: tick at +%v (ready %d, stable %v, panic %v, nodata %v):\n ours    desired %d ebc %d valid %v panic %v\n knative desired %d ebc %d valid %v panic %v",
				sc.name, now.Sub(start), ready, obs.Stable, obs.Panic, obs.NoData,
				got.DesiredPodCount, got.ExcessBurstCapacity, got.ScaleValid, got.PanicMode,
				want.DesiredPodCount, want.ExcessBurstCapacity, want.ScaleValid, k.panic)
		}
		if got.ScaleValid {
			desired = got.DesiredPodCount
		}
		// Pods follow the recommendation with some lag, and now and then
		// one fails.
		switch {
		case ready < int(desired):
			ready += 1 + rng.IntN(int(desired)-ready)
		case ready > int(desired):
			ready -= rng.IntN(ready-int(desired)) + 1
		}
		if ready > 0 && rng.IntN(50) == 0 {
			ready--
		}
	}

	for sec := range sc.seconds {
		base := start.Add(time.Duration(sec) * time.Second)
		// Within the second: its reports, and maybe an extra tick, in time
		// order (both clocks only go forward).
		var at []time.Duration
		c, report := sc.load(sec, rng)
		switch {
		case report && sc.jitter:
			for range rng.IntN(3) { // 0, 1 or 2 reports
				at = append(at, time.Duration(rng.IntN(1000))*time.Millisecond)
			}
		case report:
			at = append(at, 0)
		}
		slices.Sort(at)
		extra := time.Duration(-1)
		if sc.jitter && rng.IntN(15) == 0 {
			extra = time.Duration(20+rng.IntN(980)) * time.Millisecond
		}
		for _, d := range at {
			if extra >= 0 && extra < d {
				tick(safe(base.Add(extra)))
				extra = -1
			}
			s := Stat{Concurrency: c / float64(len(at)), Requests: math.Round(c * 3 / float64(len(at)))}
			k.record(base.Add(d), s)
			m.Record(base.Add(d), s)
		}
		if extra >= 0 {
			tick(safe(base.Add(extra)))
		}
		if sec%2 == 1 {
			tick(base.Add(time.Second))
		}
		if sc.updates && rng.IntN(200) == 0 {
			spec, ms = mutateSpec(rng, spec, ms)
			k.update(ms, spec)
			ours.Update(spec)
			// Knative's collector resizes against the wall clock.
			m.Update(time.Now(), ms)
		}
	}
}

// mutateSpec changes what a running revision may see change: config-autoscaler
// values and the window annotation. The algorithm and metric stay.
func mutateSpec(rng *rand.Rand, s Spec, ms MetricSpec) (Spec, MetricSpec) {
	s.TargetValue = []float64{0.5, 1, 7, 10, 70}[rng.IntN(5)]
	s.TotalValue = s.TargetValue / 0.7
	s.MaxScaleUpRate = []float64{1.1, 2, 1000}[rng.IntN(3)]
	s.MaxScaleDownRate = []float64{1.1, 2, 8}[rng.IntN(3)]
	s.PanicThreshold = []float64{1.1, 2, 4}[rng.IntN(3)]
	s.TargetBurstCapacity = []float64{-1, 0, 50, 211}[rng.IntN(4)]
	s.ScaleDownDelay = time.Duration(rng.IntN(3)*15) * time.Second // not taken by a running decider
	s.ActivationScale = int32([]int{0, 2, 4}[rng.IntN(3)])
	s.Reachable = rng.IntN(4) != 0
	s.StableWindow = time.Duration(6+rng.IntN(115)) * time.Second
	ms.StableWindow = s.StableWindow
	ms.PanicWindow = max((s.StableWindow * time.Duration(1+rng.IntN(100)) / 100).Round(time.Second), time.Second)
	return s, ms
}

func defaultSpec() (Spec, MetricSpec) {
	spec := Spec{
		MaxScaleUpRate: 1000, MaxScaleDownRate: 2, ScalingMetric: Concurrency,
		TargetValue: 70, TotalValue: 100, TargetBurstCapacity: 211, ActivatorCapacity: 100,
		PanicThreshold: 2, StableWindow: 60 * time.Second, InitialScale: 1, Reachable: true,
	}
	ms := MetricSpec{Metric: Concurrency, StableWindow: 60 * time.Second, PanicWindow: 6 * time.Second, ReportNoData: true}
	return spec, ms
}

// The scripted loads.
var scriptedLoads = []struct {
	name    string
	seconds int
	load    load
}{
	{"ramp", 900, func(s int, _ *rand.Rand) (float64, bool) {
		if s < 450 {
			return float64(s) * 2.3, true
		}
		return float64(900-s) * 2.3, true
	}},
	{"burst", 900, func(s int, _ *rand.Rand) (float64, bool) {
		if s%180 >= 100 && s%180 < 106 {
			return 1500, true
		}
		return 20, true
	}},
	{"square", 900, func(s int, _ *rand.Rand) (float64, bool) {
		if (s/47)%2 == 0 {
			return 400, true
		}
		return 3, true
	}},
	{"drop to zero", 900, func(s int, _ *rand.Rand) (float64, bool) {
		switch {
		case s < 200:
			return 350, true
		case s < 400:
			return 0, true // the gateway reports an idle second
		}
		return 0, false // nothing reported at all
	}},
	{"long idle", 5400, func(s int, _ *rand.Rand) (float64, bool) {
		switch {
		case s < 30 || (s >= 5000 && s < 5030):
			return 90, true
		}
		return 0, false
	}},
}

// scriptedSpecs spreads the spec values over the scripted loads.
func scriptedSpecs() []struct {
	name  string
	spec  Spec
	ms    MetricSpec
	ready int
} {
	type variant = struct {
		name  string
		spec  Spec
		ms    MetricSpec
		ready int
	}
	var out []variant
	add := func(name string, ready int, f func(*Spec, *MetricSpec)) {
		s, m := defaultSpec()
		f(&s, &m)
		out = append(out, variant{name, s, m, ready})
	}
	for _, alg := range []Algorithm{Linear, WeightedExponential} {
		p := alg.String() + "/"
		add(p+"defaults", 0, func(s *Spec, m *MetricSpec) { m.Algorithm = alg })
		add(p+"tbc=-1 (no no-data)", 1, func(s *Spec, m *MetricSpec) {
			m.Algorithm, s.TargetBurstCapacity, m.ReportNoData = alg, -1, false
		})
		add(p+"tbc=0 target=10", 0, func(s *Spec, m *MetricSpec) {
			m.Algorithm, s.TargetBurstCapacity, s.TargetValue, s.TotalValue = alg, 0, 10, 10
		})
		add(p+"activation-scale=3", 0, func(s *Spec, m *MetricSpec) { m.Algorithm, s.ActivationScale = alg, 3 })
		add(p+"scale-down-delay=30s", 4, func(s *Spec, m *MetricSpec) { m.Algorithm, s.ScaleDownDelay = alg, 30*time.Second })
		add(p+"slow rates", 3, func(s *Spec, m *MetricSpec) {
			m.Algorithm, s.MaxScaleUpRate, s.MaxScaleDownRate, s.TargetValue = alg, 1.1, 1.1, 5
		})
		add(p+"rps", 0, func(s *Spec, m *MetricSpec) {
			m.Algorithm, s.ScalingMetric, m.Metric, s.TargetValue, s.TotalValue = alg, RPS, RPS, 140, 200
		})
		add(p+"unreachable", 5, func(s *Spec, m *MetricSpec) { m.Algorithm, s.Reachable = alg, false })
		add(p+"short window, threshold 1.1", 0, func(s *Spec, m *MetricSpec) {
			m.Algorithm, s.PanicThreshold = alg, 1.1
			s.StableWindow, m.StableWindow, m.PanicWindow = 6*time.Second, 6*time.Second, time.Second
		})
	}
	return out
}

func TestDeciderMatchesKnativeScripted(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var cov coverage
	for _, l := range scriptedLoads {
		for _, v := range scriptedSpecs() {
			sc := scenario{name: l.name + "/" + v.name, metrics: v.ms, spec: v.spec, ready: v.ready, seconds: l.seconds, load: l.load}
			sc.run(t, rng, &cov)
		}
	}
	t.Log(cov)
}

func TestDeciderMatchesKnativeRandom(t *testing.T) {
	t.Parallel()
	runs := 300
	if testing.Short() {
		runs = 30
	}
	rng := rand.New(rand.NewPCG(5, 6))
	var cov coverage
	for run := range runs {
		spec, ms := defaultSpec()
		spec, ms = mutateSpec(rng, spec, ms)
		spec.ScaleDownDelay = time.Duration(rng.IntN(4)*10+rng.IntN(2)) * time.Second
		spec.ScalingMetric = []Metric{Concurrency, RPS}[rng.IntN(2)]
		ms.Metric = spec.ScalingMetric
		ms.Algorithm = Algorithm(rng.IntN(2))
		ms.ReportNoData = spec.TargetBurstCapacity != -1
		if rng.IntN(5) == 0 {
			ms.ReportNoData = !ms.ReportNoData
		}
		// A random walk with bursts, silences and drops to zero.
		level := rng.Float64() * 200
		load := func(int, *rand.Rand) (float64, bool) {
			switch r := rng.IntN(1000); {
			case r < 5:
				level = 0
			case r < 15:
				level = rng.Float64() * 3000
			case r < 25:
				level = rng.Float64() * 50
			default:
				level = math.Max(0, level+rng.NormFloat64()*level/10+rng.NormFloat64())
			}
			if level == 0 && rng.IntN(3) > 0 {
				return 0, false
			}
			return level, true
		}
		sc := scenario{
			name: fmt.Sprintf("random run %d", run), metrics: ms, spec: spec,
			ready: rng.IntN(6), seconds: 400 + rng.IntN(800), load: load,
			jitter: true, updates: run%2 == 0,
		}
		before := cov.ticks
		sc.run(t, rng, &cov)
		if os.Getenv("DEBUGRUNS") != "" {
			t.Logf("run %d: %d ticks, %d seconds, ready %d, panicking %d, rng %d", run, cov.ticks-before, sc.seconds, sc.ready, cov.panicking, rng.IntN(1000))
		}
	}
	t.Logf("%d random runs, %v", runs, cov)
}

// TestDeciderMatchesKnativeAnnotations resolves the annotation spread (under
// two config-autoscalers) with NewConfig on our side and with Knative's
// MakeDecider and MakeMetric on Knative's, and runs every scripted load
// through both.
func TestDeciderMatchesKnativeAnnotations(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 8))
	var cov coverage
	for _, cl := range clusterSpread[:2] {
		cc, err := ParseClusterConfig(cl.data)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range annotationSpread {
			rev := RevisionParams{Annotations: a.anns, ContainerConcurrency: a.cc, Reachable: true}
			cfg, err := NewConfig(cc, rev)
			if err != nil {
				continue // initial-scale 0 under a cluster that refuses it
			}
			pa := knativePA(cc, rev)
			kd := kparesources.MakeDecider(pa, cc).Spec
			scrape := "model-00001-private"
			if kd.TargetBurstCapacity == -1 {
				scrape = "" // Knative's resolveScrapeTarget: the activator reports everything
			}
			km := aresources.MakeMetric(pa, scrape, cc)
			for _, l := range scriptedLoads {
				sc := scenario{
					name: cl.name + "/" + a.name + "/" + l.name, metrics: cfg.Metrics, spec: cfg.Decider,
					ready: rng.IntN(4), seconds: l.seconds, load: l.load, kspec: &kd, kmetric: km,
				}
				sc.run(t, rng, &cov)
			}
		}
	}
	t.Log(cov)
	if cov.panicking == 0 || cov.zero == 0 || cov.activation == 0 || cov.delayed == 0 || cov.ebcNegative == 0 || cov.invalid == 0 {
		t.Errorf("the spread missed a behaviour: %v", cov)
	}
}
