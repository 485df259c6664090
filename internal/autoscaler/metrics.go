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

// Metrics aggregates one revision's stats (Knative's metric collection for
// one revision, without the scraping). Only the scaling metric is kept: it is
// fixed by the revision's annotations, which do not change.
type Metrics struct {
	stable, panic Buckets
	spec          MetricSpec
}

// NewMetrics returns empty windows for spec.
func NewMetrics(spec MetricSpec) *Metrics {
	m := &Metrics{}
	m.init(spec)
	return m
}

func (m *Metrics) init(spec MetricSpec) {
	m.spec = spec
	m.stable.init(spec.Algorithm, spec.StableWindow)
	m.panic.init(spec.Algorithm, spec.PanicWindow)
}

// Spec is the spec the windows follow.
func (m *Metrics) Spec() MetricSpec { return m.spec }

// Record adds the stat of the second containing now. Several stats for the
// same second add up, as Knative's collector does.
func (m *Metrics) Record(now time.Time, s Stat) {
	v := s.Concurrency
	if m.spec.Metric == RPS {
		v = s.Requests
	}
	m.stable.Record(now, v)
	m.panic.Record(now, v)
}

// Observe returns the window averages at now
// (Knative's MetricClient.StableAndPanicConcurrency / StableAndPanicRPS).
func (m *Metrics) Observe(now time.Time) Observation {
	if m.spec.ReportNoData && m.stable.IsEmpty(now) {
		return Observation{NoData: true}
	}
	return Observation{Stable: m.stable.WindowAverage(now), Panic: m.panic.WindowAverage(now)}
}

// Update follows a new spec: the windows are resized as Knative's collector
// does on a Metric update. The metric and the algorithm are taken from the
// revision and do not change; a change of either starts the windows afresh.
func (m *Metrics) Update(now time.Time, spec MetricSpec) {
	if spec.Metric != m.spec.Metric || spec.Algorithm != m.spec.Algorithm {
		m.init(spec)
		return
	}
	m.spec = spec
	m.stable.ResizeWindow(now, spec.StableWindow)
	m.panic.ResizeWindow(now, spec.PanicWindow)
}

// Release frees the windows' memory once they hold nothing (see
// Buckets.Release).
func (m *Metrics) Release(now time.Time) {
	m.stable.Release(now)
	m.panic.Release(now)
}
