package autoscaler

import "time"

// Metric is the quantity a revision scales on: autoscaling.knative.dev/metric.
type Metric string

// The KPA's scaling metrics.
const (
	Concurrency Metric = "concurrency" // requests in flight, time-averaged over each second
	RPS         Metric = "rps"         // requests per second
)

// Stat is one sample of a revision's load, for one second, as the gateway
// measures it for the whole revision (Knative's metrics.Stat once the
// queue-proxy scrape and the activator's report are merged: infera has one
// gateway, so there are no proxied requests to subtract).
type Stat struct {
	// Concurrency is the time-weighted average number of requests in flight.
	Concurrency float64
	// Requests is the number of requests that arrived.
	Requests float64
}

// MetricSpec is how a revision's load is aggregated (Knative's Metric
// resource spec plus the revision's aggregation algorithm).
type MetricSpec struct {
	Metric       Metric
	StableWindow time.Duration
	PanicWindow  time.Duration
	Algorithm    Algorithm
	// ReportNoData makes an empty stable window read as "no data" (the
	// decider then makes no recommendation) rather than as zero load. Knative
	// does this only when it scrapes the revision's pods, that is unless
	// target-burst-capacity is -1 (activator always in the path).
	ReportNoData bool
}

// Observation is what the decider scales on at one tick: the averages of the
// scaling metric over the stable and the panic window.
type Observation struct {
	Stable, Panic float64
	// NoData: no sample in the stable window (Knative's metrics.ErrNoData).
	// The decider then returns ScaleValid false and changes nothing.
	NoData bool
}

// Load is both metrics' window averages at one tick, whichever one the
// revision scales on (for metrics, the dashboard and infera simulate).
type Load struct {
	StableConcurrency, PanicConcurrency float64
	StableRPS, PanicRPS                 float64
}

// Metrics aggregates one revision's stats (Knative's metric collection for
// one revision, without the scraping). Like Knative's collector it keeps
// both metrics, each over a stable and a panic window; the decider reads the
// scaling metric, fixed by the revision's annotations.
type Metrics struct {
	concurrency, rps windows
	spec             MetricSpec
}

// windows is one metric's stable and panic window.
type windows struct{ stable, panic Buckets }

// NewMetrics returns empty windows for spec.
func NewMetrics(spec MetricSpec) *Metrics {
	m := &Metrics{}
	m.init(spec)
	return m
}

func (m *Metrics) init(spec MetricSpec) {
	m.spec = spec
	for _, w := range []*windows{&m.concurrency, &m.rps} {
		w.stable.init(spec.Algorithm, spec.StableWindow)
		w.panic.init(spec.Algorithm, spec.PanicWindow)
	}
}

// scaling is the scaling metric's windows.
func (m *Metrics) scaling() *windows {
	if m.spec.Metric == RPS {
		return &m.rps
	}
	return &m.concurrency
}

// Spec is the spec the windows follow.
func (m *Metrics) Spec() MetricSpec { return m.spec }

// Record adds the stat of the second containing now. Several stats for the
// same second add up, as Knative's collector does.
func (m *Metrics) Record(now time.Time, s Stat) {
	m.concurrency.stable.Record(now, s.Concurrency)
	m.concurrency.panic.Record(now, s.Concurrency)
	m.rps.stable.Record(now, s.Requests)
	m.rps.panic.Record(now, s.Requests)
}

// Observe returns the scaling metric's window averages at now
// (Knative's MetricClient.StableAndPanicConcurrency / StableAndPanicRPS).
func (m *Metrics) Observe(now time.Time) Observation {
	w := m.scaling()
	if m.spec.ReportNoData && w.stable.IsEmpty(now) {
		return Observation{NoData: true}
	}
	return Observation{Stable: w.stable.WindowAverage(now), Panic: w.panic.WindowAverage(now)}
}

// Load returns both metrics' window averages at now, whether or not there
// is data (no data reads as zero).
func (m *Metrics) Load(now time.Time) Load {
	return Load{
		StableConcurrency: m.concurrency.stable.WindowAverage(now),
		PanicConcurrency:  m.concurrency.panic.WindowAverage(now),
		StableRPS:         m.rps.stable.WindowAverage(now),
		PanicRPS:          m.rps.panic.WindowAverage(now),
	}
}

// observeLoad is Observe and Load at once, each window averaged once.
func (m *Metrics) observeLoad(now time.Time) (Observation, Load) {
	l := m.Load(now)
	if m.spec.ReportNoData && m.scaling().stable.IsEmpty(now) {
		return Observation{NoData: true}, l
	}
	if m.spec.Metric == RPS {
		return Observation{Stable: l.StableRPS, Panic: l.PanicRPS}, l
	}
	return Observation{Stable: l.StableConcurrency, Panic: l.PanicConcurrency}, l
}

// Update follows a new spec: the windows are resized as Knative's collector
// does on a Metric update. Both metrics are kept, so a change of the scaling
// metric loses nothing; the algorithm is taken from the revision and does not
// change, and a change of it starts the windows afresh.
func (m *Metrics) Update(now time.Time, spec MetricSpec) {
	if spec.Algorithm != m.spec.Algorithm {
		m.init(spec)
		return
	}
	m.spec = spec
	for _, w := range []*windows{&m.concurrency, &m.rps} {
		w.stable.ResizeWindow(now, spec.StableWindow)
		w.panic.ResizeWindow(now, spec.PanicWindow)
	}
}

// Release frees the windows' memory once they hold nothing (see
// Buckets.Release).
func (m *Metrics) Release(now time.Time) {
	for _, w := range []*windows{&m.concurrency, &m.rps} {
		w.stable.Release(now)
		w.panic.Release(now)
	}
}
