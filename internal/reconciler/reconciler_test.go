package reconciler

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/infera-dev/infera/internal/workload"

	corev1 "k8s.io/api/core/v1"
)

func service(image string, traffic ...servingv1.TrafficTarget) *servingv1.Service {
	s := &servingv1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "llm", Namespace: "default", Generation: 1},
		Spec: servingv1.ServiceSpec{
			ConfigurationSpec: servingv1.ConfigurationSpec{Template: servingv1.RevisionTemplateSpec{
				Spec: servingv1.RevisionSpec{PodSpec: corev1.PodSpec{Containers: []corev1.Container{{Image: image}}}},
			}},
			RouteSpec: servingv1.RouteSpec{Traffic: traffic},
		},
	}
	s.SetDefaults(context.Background())
	return s
}

// step runs Compute and feeds its configurations and revisions back as the next input, the
// way infera up persists them.
type world struct {
	in  Input
	out Output
}

func (w *world) step(t *testing.T, svc *servingv1.Service) Output {
	t.Helper()
	w.in.Services = []*servingv1.Service{svc}
	w.in.Domain = "localhost"
	w.out = Compute(w.in)
	w.in.Configurations = w.out.Configurations
	w.in.Revisions = w.out.Revisions
	return w.out
}

func (w *world) ready(rev string) {
	if w.in.Observed == nil {
		w.in.Observed = map[workload.RevisionID]Observed{}
	}
	w.in.Observed[workload.NewRevisionID("default", rev)] = Observed{Ready: 1}
}

func revNames(out Output) []string {
	var names []string
	for _, r := range out.Revisions {
		names = append(names, r.Name)
	}
	return names
}

func targets(out Output) string {
	if len(out.Routes) == 0 {
		return ""
	}
	s := ""
	for _, t := range out.Routes[0].Targets {
		s += string(t.Revision) + ":" + itoa(t.Percent) + ":" + t.Tag + " "
	}
	return s
}

func itoa(i int) string {
	return string(rune('0'+i/100)) + string(rune('0'+i/10%10)) + string(rune('0'+i%10))
}

func TestRolloutFollowsLatestReady(t *testing.T) {
	var w world
	out := w.step(t, service("example.com/a:1"))
	if got := revNames(out); len(got) != 1 || got[0] != "llm-00001" {
		t.Fatalf("revisions = %v, want [llm-00001]", got)
	}
	// Before any revision is ready, requests go to (and wait for) the latest created one.
	if got := targets(out); got != "default/llm-00001:100: " {
		t.Fatalf("targets = %q", got)
	}
	if !out.Active["default/llm-00001"] {
		t.Fatal("llm-00001 should run")
	}
	w.ready("llm-00001")
	out = w.step(t, service("example.com/a:1"))
	if !out.Services[0].IsReady() {
		t.Fatalf("service not ready: %+v", out.Services[0].Status.Conditions)
	}
	if out.Services[0].Status.URL.String() != "http://llm.default.localhost" {
		t.Errorf("url = %s", out.Services[0].Status.URL)
	}

	// A new template makes llm-00002; traffic stays on 00001 until 00002 is ready.
	out = w.step(t, service("example.com/a:2"))
	if got := revNames(out); len(got) != 2 || got[1] != "llm-00002" {
		t.Fatalf("revisions = %v", got)
	}
	if got := targets(out); got != "default/llm-00001:100: " {
		t.Fatalf("during rollout targets = %q, want the old revision", got)
	}
	if !out.Active["default/llm-00002"] || !out.Active["default/llm-00001"] {
		t.Fatalf("both revisions should run during rollout: %v", out.Active)
	}
	w.ready("llm-00002")
	delete(w.in.Observed, "default/llm-00001")
	out = w.step(t, service("example.com/a:2"))
	if got := targets(out); got != "default/llm-00002:100: " {
		t.Fatalf("after rollout targets = %q", got)
	}
	if out.Active["default/llm-00001"] {
		t.Error("the old revision should no longer run")
	}
	// The same template again creates nothing.
	out = w.step(t, service("example.com/a:2"))
	if len(out.Revisions) != 2 {
		t.Fatalf("revisions = %v", revNames(out))
	}
}

func TestTrafficSplitAndTags(t *testing.T) {
	var w world
	w.step(t, service("example.com/a:1"))
	w.ready("llm-00001")
	w.step(t, service("example.com/a:1"))
	w.step(t, service("example.com/a:2"))
	w.ready("llm-00002")
	p70, p30 := int64(70), int64(30)
	out := w.step(t, service("example.com/a:2",
		servingv1.TrafficTarget{RevisionName: "llm-00001", Percent: &p70, Tag: "stable"},
		servingv1.TrafficTarget{LatestRevision: ptr(true), Percent: &p30, Tag: "canary"},
	))
	if got := targets(out); got != "default/llm-00001:070:stable default/llm-00002:030:canary " {
		t.Fatalf("targets = %q", got)
	}
	tr := out.Services[0].Status.Traffic
	if len(tr) != 2 || tr[1].URL.Host != "canary-llm.default.localhost" {
		t.Fatalf("traffic status = %+v", tr)
	}
}

func TestFailedRevisionKeepsOldTraffic(t *testing.T) {
	var w world
	w.step(t, service("example.com/a:1"))
	w.ready("llm-00001")
	w.step(t, service("example.com/a:1"))
	w.in.Observed["default/llm-00002"] = Observed{Failed: true, Message: "exit status 1"}
	out := w.step(t, service("example.com/a:broken"))
	if got := targets(out); got != "default/llm-00001:100: " {
		t.Fatalf("targets = %q", got)
	}
	c := out.Services[0].Status.GetCondition(servingv1.ServiceConditionConfigurationsReady)
	if c == nil || c.IsTrue() {
		t.Fatalf("ConfigurationsReady = %+v, want not true", c)
	}
}

func TestNamedRevisionAndModels(t *testing.T) {
	var w world
	s := service("example.com/a:1")
	s.Spec.Template.Name = "llm-first"
	s.Annotations = map[string]string{ModelsAnnotation: "llama, qwen"}
	out := w.step(t, s)
	if got := revNames(out); len(got) != 1 || got[0] != "llm-first" {
		t.Fatalf("revisions = %v", got)
	}
	if m := out.Routes[0].Models; len(m) != 3 || m[1] != "llama" || m[2] != "qwen" {
		t.Fatalf("models = %v", m)
	}
}

// TestUnchangedStatusIsStable: reconciling again with nothing new yields byte-identical
// configurations and revisions (their stored status keeps its transition times), whatever
// state the revision is in, so infera up does not rewrite its store on every pass.
func TestUnchangedStatusIsStable(t *testing.T) {
	past := apis.VolatileTime{Inner: metav1.NewTime(time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC))}
	for _, o := range []Observed{{}, {Ready: 1}, {Failed: true, Message: "exit status 1: boom"}} {
		w := &world{in: Input{Observed: map[workload.RevisionID]Observed{workload.NewRevisionID("default", "llm-00001"): o}}}
		svc := service("img")
		w.step(t, svc)
		// As if stored long ago.
		for _, c := range w.in.Configurations {
			for i := range c.Status.Conditions {
				c.Status.Conditions[i].LastTransitionTime = past
			}
		}
		for _, r := range w.in.Revisions {
			for i := range r.Status.Conditions {
				r.Status.Conditions[i].LastTransitionTime = past
			}
		}
		first, _ := json.Marshal([]any{w.in.Configurations, w.in.Revisions})
		w.step(t, svc)
		second, _ := json.Marshal([]any{w.out.Configurations, w.out.Revisions})
		if string(first) != string(second) {
			t.Errorf("observed %+v: second pass changed the status:\n%s\n%s", o, first, second)
		}
	}
}

// TestServiceStatusKeptWhenCarried: a caller that passes the Service's last status back gets
// its transition times kept while nothing changes.
func TestServiceStatusKeptWhenCarried(t *testing.T) {
	past := apis.VolatileTime{Inner: metav1.NewTime(time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC))}
	w := &world{}
	w.ready("llm-00001")
	svc := service("img")
	out := w.step(t, svc)
	carried := svc.DeepCopy()
	carried.Status = *out.Services[0].Status.DeepCopy()
	for i := range carried.Status.Conditions {
		carried.Status.Conditions[i].LastTransitionTime = past
	}
	out = w.step(t, carried)
	for _, c := range out.Services[0].Status.Conditions {
		if !c.LastTransitionTime.Inner.Equal(&past.Inner) {
			t.Errorf("condition %s: time %v, want the carried %v", c.Type, c.LastTransitionTime.Inner, past.Inner)
		}
	}
}
