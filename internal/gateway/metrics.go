package gateway

import (
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infera-dev/infera/internal/workload"
)

// Knative's request metric labels.
var (
	revisionLabels = []string{"namespace_name", "service_name", "configuration_name", "revision_name"}
	requestLabels  = append(append([]string(nil), revisionLabels...), "response_code", "response_code_class")
)

// latencyBucketsMs are Knative's request latency buckets: 1, 2, 5, 10, ... 100000 ms.
var latencyBucketsMs = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000}

// metrics are the gateway's Prometheus collectors, under Knative's names.
type metrics struct {
	requests  *prometheus.CounterVec   // revision_request_count
	latencies *prometheus.HistogramVec // revision_request_latencies (ms)
	queue     *prometheus.GaugeVec     // revision_queue_depth
	activator *prometheus.CounterVec   // activator_request_count
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "revision_request_count",
			Help: "The number of requests that are routed to queue-proxy",
		}, requestLabels),
		latencies: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "revision_request_latencies",
			Help:    "The response latencies of the requests, in milliseconds",
			Buckets: latencyBucketsMs,
		}, requestLabels),
		queue: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "revision_queue_depth",
			Help: "The current number of items in the serving and waiting queue",
		}, revisionLabels),
		activator: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "activator_request_count",
			Help: "The number of requests that passed through the activator (held or activator in path)",
		}, requestLabels),
	}
	m.requests = register(reg, m.requests)
	m.latencies = register(reg, m.latencies)
	m.queue = register(reg, m.queue)
	m.activator = register(reg, m.activator)
	return m
}

// register adds c to reg, or returns the equal collector already there (two gateways on one
// registry share their series).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}

// revMetrics are one revision's series.
type revMetrics struct {
	m          *metrics
	labels     [4]string
	queueDepth prometheus.Gauge
}

// forRevision is nil when the gateway has no registerer.
func (m *metrics) forRevision(rev workload.Revision) *revMetrics {
	if m == nil {
		return nil
	}
	lv := [4]string{rev.Namespace, rev.Service, rev.Configuration, rev.Name}
	return &revMetrics{m: m, labels: lv, queueDepth: m.queue.WithLabelValues(lv[:]...)}
}

// observe records one finished request.
func (rm *revMetrics) observe(code int, latency time.Duration, viaActivator bool) {
	if rm == nil {
		return
	}
	lv := [6]string{rm.labels[0], rm.labels[1], rm.labels[2], rm.labels[3], strconv.Itoa(code), codeClass(code)}
	rm.m.requests.WithLabelValues(lv[:]...).Inc()
	rm.m.latencies.WithLabelValues(lv[:]...).Observe(float64(latency) / float64(time.Millisecond))
	if viaActivator {
		rm.m.activator.WithLabelValues(lv[:]...).Inc()
	}
}

func codeClass(code int) string {
	if code < 100 || code > 599 {
		return "5xx"
	}
	return strconv.Itoa(code/100) + "xx"
}

// forget drops the revision's queue-depth series (the revision is gone or renamed).
func (rm *revMetrics) forget() {
	rm.m.queue.DeleteLabelValues(rm.labels[:]...)
}
