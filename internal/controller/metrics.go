package controller

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Knative's autoscaler metric names and labels (knative.dev/serving/pkg/autoscaler/metrics).
var (
	revisionLabels = []string{"namespace_name", "service_name", "configuration_name", "revision_name"}

	descDesired     = prometheus.NewDesc("autoscaler_desired_pods", "Number of pods autoscaler wants to allocate", revisionLabels, nil)
	descActual      = prometheus.NewDesc("autoscaler_actual_pods", "Number of pods that are allocated currently", revisionLabels, nil)
	descPanic       = prometheus.NewDesc("autoscaler_panic_mode", "1 if autoscaler is in panic mode, 0 otherwise", revisionLabels, nil)
	descStable      = prometheus.NewDesc("autoscaler_stable_request_concurrency", "Average of requests count per observed pod over the stable window", revisionLabels, nil)
	descPanicConc   = prometheus.NewDesc("autoscaler_panic_request_concurrency", "Average of requests count per observed pod over the panic window", revisionLabels, nil)
	descTarget      = prometheus.NewDesc("autoscaler_target_concurrency_per_pod", "The desired number of concurrent requests for each pod", revisionLabels, nil)
	descExcessBurst = prometheus.NewDesc("autoscaler_excess_burst_capacity", "Excess burst capacity observed over the stable window", revisionLabels, nil)
)

// autoscalerCollector exports the scaler's last decision per revision.
type autoscalerCollector struct{ c *Controller }

func (a autoscalerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDesired, descActual, descPanic, descStable, descPanicConc, descTarget, descExcessBurst} {
		ch <- d
	}
}

func (a autoscalerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range a.c.Revisions() {
		if r.Decision == nil {
			continue
		}
		d := r.Decision
		labels := []string{r.Namespace, r.Service, r.Service, r.Name}
		panic := 0.0
		if d.Panic {
			panic = 1
		}
		for _, m := range []struct {
			desc *prometheus.Desc
			v    float64
		}{
			{descDesired, float64(d.DeciderDesired)}, {descActual, float64(r.ReadyReplicas)}, {descPanic, panic},
			{descStable, d.StableConcurrency}, {descPanicConc, d.PanicConcurrency}, {descTarget, d.Target},
			{descExcessBurst, d.ExcessBurstCapacity},
		} {
			ch <- prometheus.MustNewConstMetric(m.desc, prometheus.GaugeValue, m.v, labels...)
		}
	}
}

// Collector exports the autoscaler's metrics under Knative's names.
func (c *Controller) Collector() prometheus.Collector { return autoscalerCollector{c} }
