package controller

import (
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	promtestutil "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/infera-dev/infera/internal/adminapi"
	"github.com/infera-dev/infera/internal/manifest"
	"github.com/infera-dev/infera/internal/store"
	"github.com/infera-dev/infera/internal/workload"
)

const (
	llm1 = workload.RevisionID("default/llm-00001")
	llm2 = workload.RevisionID("default/llm-00002")
)

// TestLifecycle follows one Service from apply to delete: start, ready, a rollout that keeps
// the old revision routed until the new one is ready, retirement, and delete.
func TestLifecycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "")
		h.expect() // an empty store asks for nothing

		h.apply(service("llm", ""))
		h.expect(
			"gateway.SetRevision default/llm-00001",
			"scaler.Upsert default/llm-00001",
			"gateway.SetActivatorInPath default/llm-00001 false",
			"supervisor.Scale default/llm-00001 1",
			// Before any revision was ready, the route holds requests for the latest created.
			"gateway.SetRoutes llm.default.localhost->default/llm-00001=100",
		)
		if r := h.revision("llm-00001"); r.State != adminapi.StateRunning || r.Ready != "Unknown" || !r.Routed {
			t.Errorf("started revision: %+v", r)
		}

		h.ready(llm1, 1)
		h.expect() // readiness changes status only
		if r := h.revision("llm-00001"); r.Ready != "True" || r.ReadyReplicas != 1 {
			t.Errorf("ready revision: %+v", r)
		}
		if s := h.ctrl.Services()[0]; s.Ready != "True" || s.LatestReady != "llm-00001" {
			t.Errorf("service: %+v", s)
		}
		stored, err := h.store.Get(store.Key{Group: servingGroup, Kind: kindRevision, Namespace: "default", Name: "llm-00001"})
		if err != nil || !strings.Contains(string(stored.Data), `"type":"Ready","status":"True"`) {
			t.Errorf("stored revision is not Ready: %v %s", err, stored.Data)
		}

		// A new template: a second revision starts; traffic stays until it is ready.
		h.apply(service("llm", "          env: [{name: V, value: \"2\"}]\n"))
		h.expect(
			"gateway.SetRevision default/llm-00002",
			"scaler.Upsert default/llm-00002",
			"gateway.SetActivatorInPath default/llm-00002 false",
			"supervisor.Scale default/llm-00002 1",
		)
		h.ready(llm2, 1)
		h.expect(
			"gateway.SetRoutes llm.default.localhost->default/llm-00002=100",
			"supervisor.Remove default/llm-00001",
			"scaler.Remove default/llm-00001",
		)
		if r := h.revision("llm-00001"); r.State != adminapi.StateRunning || r.Routed {
			// Its replicas are still draining: the gateway keeps the revision until they are gone.
			if r.State != adminapi.StateRetired {
				t.Errorf("old revision: %+v", r)
			}
		}
		h.ready(llm1, 0)
		h.expect("gateway.RemoveRevision default/llm-00001")

		h.delete(service("llm", ""))
		h.expect(
			"gateway.SetRoutes ",
			"supervisor.Remove default/llm-00002",
			"scaler.Remove default/llm-00002",
		)
		objs, _ := h.store.List(servingGroup, "", "")
		if len(objs) != 0 {
			t.Errorf("store keeps %d serving objects after the delete: %v", len(objs), objs)
		}
		if len(h.ctrl.Services()) != 0 || len(h.ctrl.Revisions()) != 0 {
			t.Errorf("views after delete: %+v %+v", h.ctrl.Services(), h.ctrl.Revisions())
		}
	})
}

// TestScalingLoop checks the stats and tick cadence: stats every second (zeros for a revision
// with replicas and no traffic), a tick every 2 s with the ready replicas, decisions applied.
func TestScalingLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "")
		h.apply(service("llm", ""))
		h.ready(llm1, 1)
		h.calls.take()

		h.gw.mu.Lock()
		h.gw.stats = []workload.Stat{{Revision: llm1, Time: epoch.Add(time.Second), Concurrency: 3}}
		h.gw.mu.Unlock()
		h.advance(time.Second)
		h.expect("scaler.Record default/llm-00001 3")
		h.scaler.next[llm1] = 4
		h.advance(time.Second)
		h.expect(
			"scaler.Record default/llm-00001 0", // no traffic this second, replicas running
			"scaler.Tick default/llm-00001=1",
			"gateway.SetActivatorInPath default/llm-00001 false",
			"supervisor.Scale default/llm-00001 4",
		)
		h.advance(time.Second)
		h.expect("scaler.Record default/llm-00001 0")
		if d := h.revision("llm-00001").Decision; d == nil || d.Desired != 4 {
			t.Errorf("decision in the view: %+v", d)
		}

		// Scaled to zero: a poke brings one replica at once, without waiting for a tick.
		h.scaler.next[llm1] = 0
		h.advance(time.Second)
		h.sup.set(llm1, RevisionStatus{})
		h.expect(
			"scaler.Record default/llm-00001 0",
			"scaler.Tick default/llm-00001=1",
			"gateway.SetActivatorInPath default/llm-00001 true",
			"supervisor.Scale default/llm-00001 0",
		)
		h.ctrl.Poke(llm1)
		synctest.Wait()
		h.expect(
			"scaler.Poke default/llm-00001 1/1 at +4s (now +4s) ready 0", // the activator's stat
			"gateway.SetActivatorInPath default/llm-00001 false",
			"supervisor.Scale default/llm-00001 1",
		)
	})
}

// TestTicksNotDelayedByPasses blocks the reconcile goroutine inside a pass and checks that the
// scaling loop still records stats and ticks on time.
func TestTicksNotDelayedByPasses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "")
		h.apply(service("llm", ""))
		h.ready(llm1, 1)
		h.calls.take()

		release := make(chan struct{})
		h.gw.mu.Lock()
		h.gw.blockIn = release
		h.gw.mu.Unlock()
		// A second service makes the next pass call SetRoutes, which blocks.
		if _, err := h.ctrl.Apply(h.ctx, sources(service("chat", "")), false); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		h.calls.take()
		h.scaler.next[llm1] = 2
		h.advance(2 * time.Second)
		h.expect(
			"scaler.Record default/llm-00001 0",
			"scaler.Record default/llm-00001 0",
			"scaler.Tick default/chat-00001=0 default/llm-00001=1",
			"gateway.SetActivatorInPath default/llm-00001 false",
			"supervisor.Scale default/llm-00001 2",
		)
		h.gw.mu.Lock()
		h.gw.blockIn = nil
		h.gw.mu.Unlock()
		close(release)
		synctest.Wait()
		h.expect("gateway.SetRoutes chat.default.localhost->default/chat-00001=100 llm.default.localhost->default/llm-00001=100")
	})
}

// TestPendingStartsByItself: a revision whose Secret is gone (deleted while up was stopped:
// apply refuses a Service that names a missing Secret) is Pending with the reason, and starts
// once the Secret is applied again, without any change to the Service.
func TestPendingStartsByItself(t *testing.T) {
	dir := t.TempDir()
	svc := service("llm", `          env:
            - name: TOKEN
              valueFrom: {secretKeyRef: {name: hf, key: token}}
`)
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, dir)
		h.apply(svc + "---\n" + secretYAML("hf", "token"))
		h.stop()
		if _, _, err := func() ([]store.Change, uint64, error) {
			st, err := store.Open(dir+"/"+store.FileName, store.Options{})
			if err != nil {
				return nil, 0, err
			}
			defer st.Close()
			return st.Apply(t.Context(), nil, []store.Key{{Kind: "Secret", Namespace: "default", Name: "hf"}})
		}(); err != nil {
			t.Fatal(err)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, dir)
		h.expect("gateway.SetRoutes llm.default.localhost->default/llm-00001=100")
		r := h.revision("llm-00001")
		if r.State != adminapi.StatePending || r.Reason != "SecretMissing" || !strings.Contains(r.Message, `secret "hf" not found`) {
			t.Errorf("pending revision: %+v", r)
		}
		if c := condition(r, "ResourcesAvailable"); c.Status != "Unknown" || c.Reason != "SecretMissing" {
			t.Errorf("ResourcesAvailable: %+v", c)
		}
		if s := h.ctrl.Services()[0]; s.Ready == "False" {
			t.Errorf("a pending revision must not fail its service: %+v", s)
		}

		h.advance(resyncPeriod) // re-checked on resync; still missing, nothing changes
		h.expectPlane()

		h.apply(secretYAML("hf", "token"))
		h.expect(
			"gateway.SetRevision default/llm-00001",
			"scaler.Upsert default/llm-00001",
			"gateway.SetActivatorInPath default/llm-00001 false",
			"supervisor.Scale default/llm-00001 1",
		)
		if r := h.revision("llm-00001"); r.State != adminapi.StateRunning || r.Reason == "SecretMissing" {
			t.Errorf("after the secret: %+v", r)
		}
	})
}

// TestFailedNeedsAChange: a revision the user must fix is Failed, shown with its reason, and
// tried again when the store changes (here: the image mapping it lacked).
func TestFailedNeedsAChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "")
		h.apply(strings.Replace(strings.Replace(service("llm", ""), `          command: ["app"]`+"\n", "", 1), "example.com/app", "app", 1))
		h.expect("gateway.SetRoutes llm.default.localhost->default/llm-00001=100")
		r := h.revision("llm-00001")
		if r.State != adminapi.StateFailed || r.Ready != "False" || !strings.Contains(r.Message, "no command mapping") {
			t.Errorf("failed revision: %+v", r)
		}
		h.advance(resyncPeriod)
		h.expectPlane()

		h.apply(`apiVersion: v1
kind: ConfigMap
metadata: {name: images, namespace: infera-system}
data: {app: "app --serve"}
`)
		h.expect(
			"gateway.SetRevision default/llm-00001",
			"scaler.Upsert default/llm-00001",
			"gateway.SetActivatorInPath default/llm-00001 false",
			"supervisor.Scale default/llm-00001 1",
		)
		if c := h.gw.revs[llm1].Container; strings.Join(append(c.Command, c.Args...), " ") != "app --serve" {
			t.Errorf("command from the mapping: %q %q", c.Command, c.Args)
		}
	})
}

// TestScalerRefusal: annotations the scaler refuses fail the revision with its message.
func TestScalerRefusal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "")
		h.apply(strings.Replace(service("llm", ""), "    spec:\n      containers:", "    metadata:\n      annotations: {autoscaling.knative.dev/min-scale: \"7\"}\n    spec:\n      containers:", 1))
		h.expect(
			"gateway.SetRevision default/llm-00001",
			"gateway.RemoveRevision default/llm-00001",
			"gateway.SetRoutes llm.default.localhost->default/llm-00001=100",
		)
		if r := h.revision("llm-00001"); r.State != adminapi.StateFailed || !strings.Contains(r.Message, "min-scale") {
			t.Errorf("refused revision: %+v", r)
		}
	})
}

// TestNothingChangedDoesNothing: passes with no change (kicks, resyncs) ask nothing of the
// data plane and write nothing to the store.
func TestNothingChangedDoesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "")
		h.apply(service("llm", "") + "---\n" + service("chat", ""))
		h.ready(llm1, 1)
		h.calls.take()
		rev := h.store.Revision()
		for range 3 {
			h.ctrl.Kick()
			synctest.Wait()
		}
		h.advance(resyncPeriod)
		h.expectPlane()
		if h.store.Revision() != rev {
			t.Errorf("store written: revision %d -> %d", rev, h.store.Revision())
		}
	})
}

// TestRestart: a controller on an existing store serves what it holds from its first pass.
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, dir)
		h.apply(service("llm", ""))
		h.ready(llm1, 1)
		h.stop()
	})
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, dir)
		h.expect(
			"gateway.SetRevision default/llm-00001",
			"scaler.Upsert default/llm-00001",
			"gateway.SetActivatorInPath default/llm-00001 false",
			"supervisor.Scale default/llm-00001 1",
			// It was ready before: the route follows the latest ready revision at once.
			"gateway.SetRoutes llm.default.localhost->default/llm-00001=100",
		)
		r := h.revision("llm-00001")
		if r.Ready != "True" || r.Generation != "1" {
			t.Errorf("restored revision: %+v", r)
		}
		if len(h.ctrl.Revisions()) != 1 {
			t.Errorf("a restart must not make new revisions: %+v", h.ctrl.Revisions())
		}
	})
}

// TestTrafficSplitAndTags: a traffic block is routed as written.
func TestTrafficSplitAndTags(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "")
		h.apply(service("llm", ""))
		h.ready(llm1, 1)
		h.apply(service("llm", "          env: [{name: V, value: \"2\"}]\n") + `  traffic:
    - revisionName: llm-00001
      percent: 70
    - latestRevision: true
      percent: 30
      tag: canary
`)
		h.ready(llm2, 1)
		h.gw.mu.Lock()
		routes := h.gw.routes
		h.gw.mu.Unlock()
		if len(routes) != 1 || len(routes[0].Targets) != 2 ||
			routes[0].Targets[0] != (workload.Target{Revision: llm1, Percent: 70}) ||
			routes[0].Targets[1] != (workload.Target{Revision: llm2, Percent: 30, Tag: "canary"}) {
			t.Errorf("routes: %+v", routes)
		}
		if r := h.revision("llm-00001"); r.State != adminapi.StateRunning || !r.Routed {
			t.Errorf("a routed old revision keeps running: %+v", r)
		}
	})
}

func sources(yaml string) []manifest.Source {
	return []manifest.Source{{Name: "test.yaml", Data: []byte(yaml)}}
}

func secretYAML(name, key string) string {
	return "apiVersion: v1\nkind: Secret\nmetadata: {name: " + name + ", namespace: default}\nstringData: {" + key + ": s3cr3t}\n"
}

func condition(r adminapi.RevisionView, typ string) adminapi.ConditionView {
	for _, c := range r.Conditions {
		if c.Type == typ {
			return c
		}
	}
	return adminapi.ConditionView{Status: "Unknown"}
}

// TestKnativeConfigMaps: config-domain moves every route; config-autoscaler reaches the scaler.
func TestKnativeConfigMaps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "")
		h.apply(service("llm", "") + "---\n" + service("chat", ""))
		h.calls.take()
		h.apply(`apiVersion: v1
kind: ConfigMap
metadata: {name: config-domain, namespace: knative-serving}
data: {example.test: ""}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: config-autoscaler, namespace: knative-serving}
data: {container-concurrency-target-default: "50"}
`)
		h.expect(
			"scaler.SetConfig",
			"gateway.SetRoutes chat.default.example.test->default/chat-00001=100 llm.default.example.test->default/llm-00001=100",
		)
		if s := h.ctrl.Services()[1]; s.URL != "http://llm.default.example.test" {
			t.Errorf("service URL under config-domain: %s", s.URL)
		}
		h.delete("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: config-domain, namespace: knative-serving}\n")
		h.expect( // config-autoscaler is unchanged: the scaler is not told again
			"gateway.SetRoutes chat.default.localhost->default/chat-00001=100 llm.default.localhost->default/llm-00001=100",
		)
	})
}

// TestStoreFailureStopsRun: a store that closes under a running controller ends Run with an
// error, so that up stops instead of serving on without a controller.
func TestStoreFailureStopsRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "")
		h.apply(service("llm", ""))
		h.store.Close()
		synctest.Wait()
		select {
		case err := <-h.done:
			if err == nil || !errors.Is(err, store.ErrClosed) {
				t.Fatalf("Run = %v, want store.ErrClosed", err)
			}
			h.done <- nil // for the cleanup's stop
		default:
			t.Fatal("Run kept running with its store closed")
		}
	})
}

// TestAutoscalerMetrics checks Knative's autoscaler_* series through Prometheus's own
// collector test helper (the text exposition format, parsed).
func TestAutoscalerMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "")
		h.apply(service("llm", ""))
		h.ready(llm1, 1)
		want := `
# HELP autoscaler_actual_pods Number of pods that are allocated currently
# TYPE autoscaler_actual_pods gauge
autoscaler_actual_pods{configuration_name="llm",namespace_name="default",revision_name="llm-00001",service_name="llm"} 1
# HELP autoscaler_desired_pods Number of pods autoscaler wants to allocate
# TYPE autoscaler_desired_pods gauge
autoscaler_desired_pods{configuration_name="llm",namespace_name="default",revision_name="llm-00001",service_name="llm"} 1
# HELP autoscaler_panic_mode 1 if autoscaler is in panic mode, 0 otherwise
# TYPE autoscaler_panic_mode gauge
autoscaler_panic_mode{configuration_name="llm",namespace_name="default",revision_name="llm-00001",service_name="llm"} 0
`
		if err := promtestutil.CollectAndCompare(h.ctrl.Collector(), strings.NewReader(want),
			"autoscaler_actual_pods", "autoscaler_desired_pods", "autoscaler_panic_mode"); err != nil {
			t.Error(err)
		}
		if n := promtestutil.CollectAndCount(h.ctrl.Collector()); n != 7 {
			t.Errorf("%d series, want Knative's 7 for one revision", n)
		}
	})
}
