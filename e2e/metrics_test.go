package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches the admin /metrics and parses it with Prometheus's own text parser.
func (u *up) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + u.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics is not valid Prometheus text: %v", err)
	}
	return families
}

// sample finds the value of a metric whose labels include want.
func sample(families map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f, ok := families[name]
	if !ok {
		return 0, false
	}
	for _, m := range f.Metric {
		match := 0
		for _, l := range m.Label {
			if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
				match++
			}
		}
		if match != len(want) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

func TestMetricsKeepKnativeNames(t *testing.T) {
	u := startUp(t, appService("counted", nil, nil, "", ""))
	u.waitReady("counted")
	for i := 0; i < 5; i++ {
		if code, _ := u.get(t, "counted.default.localhost", "/"); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	rev := map[string]string{"namespace_name": "default", "service_name": "counted", "configuration_name": "counted", "revision_name": "counted-00001"}
	eventually(t, 10*time.Second, "metrics", func() (bool, string) {
		fams := u.scrape(t)
		ok200 := map[string]string{"revision_name": "counted-00001", "response_code": "200", "response_code_class": "2xx"}
		n, found := sample(fams, "revision_request_count", ok200)
		if !found || n < 5 {
			return false, "revision_request_count{response_code=200} missing or < 5"
		}
		if _, found := sample(fams, "revision_request_latencies", map[string]string{"revision_name": "counted-00001"}); !found {
			return false, "revision_request_latencies missing"
		}
		if d, found := sample(fams, "autoscaler_desired_pods", rev); !found || d != 1 {
			return false, "autoscaler_desired_pods missing or not 1"
		}
		for _, name := range []string{"autoscaler_actual_pods", "autoscaler_panic_mode", "autoscaler_stable_request_concurrency",
			"autoscaler_target_concurrency_per_pod", "autoscaler_excess_burst_capacity"} {
			if _, found := sample(fams, name, rev); !found {
				return false, name + " missing"
			}
		}
		return true, ""
	})
}

func TestRequestLogFromConfigObservability(t *testing.T) {
	u := startUp(t, `apiVersion: v1
kind: ConfigMap
metadata:
  name: config-observability
  namespace: knative-serving
data:
  logging.enable-request-log: "true"
  logging.request-log-template: 'REQ {{.Request.Method}} {{.Request.Host}} {{.Response.Code}} {{.Revision.Name}} {{.Revision.Service}}'
---
`+appService("logged", nil, nil, "", ""))
	u.waitReady("logged")
	if code, _ := u.get(t, "logged.default.localhost", "/"); code != 200 {
		t.Fatalf("status %d", code)
	}
	eventually(t, 10*time.Second, "request log line", func() (bool, string) {
		return strings.Contains(u.out.String(), "REQ GET logged.default.localhost 200 logged-00001 logged"), ""
	})
}

// TestRequestLogAppliedLive: config-observability applied to a running up changes the request
// log without a restart: on, then a new template.
func TestRequestLogAppliedLive(t *testing.T) {
	u := startUp(t, appService("live", nil, nil, "", ""))
	u.waitReady("live")
	cm := func(tmpl string) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-observability\n  namespace: knative-serving\ndata:\n" +
			"  logging.enable-request-log: \"true\"\n  logging.request-log-template: '" + tmpl + "'\n"
	}
	for _, tmpl := range []string{"LIVE1 {{.Revision.Name}} {{.Response.Code}}", "LIVE2 {{.Request.Method}} {{.Revision.Name}}"} {
		u.apply(t, cm(tmpl))
		want := strings.NewReplacer("{{.Revision.Name}}", "live-00001", "{{.Response.Code}}", "200", "{{.Request.Method}}", "GET").Replace(tmpl)
		eventually(t, 10*time.Second, "a line from "+tmpl, func() (bool, string) {
			u.get(t, "live.default.localhost", "/")
			return strings.Contains(u.out.String(), want), ""
		})
	}
}
