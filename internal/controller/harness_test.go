package controller

import (
	"context"
	"fmt"
	"io"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/infera-dev/infera/internal/adminapi"
	"github.com/infera-dev/infera/internal/autoscaler"
	"github.com/infera-dev/infera/internal/manifest"
	"github.com/infera-dev/infera/internal/reconciler"
	"github.com/infera-dev/infera/internal/store"
	"github.com/infera-dev/infera/internal/testutil"
	"github.com/infera-dev/infera/internal/workload"
)

// The harness runs a Controller against a real store and hand-written fakes of the gateway,
// supervisor and scaler, inside a synctest bubble with testutil.FakeClock: Advance moves time,
// synctest.Wait lets every goroutine settle, and each fake records what it was asked for in
// one ordered log, so a test reads what the controller did tick by tick.

// calls is the ordered log every fake appends to.
type calls struct {
	mu  sync.Mutex
	log []string
}

func (c *calls) add(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log = append(c.log, fmt.Sprintf(format, args...))
}

// take returns the calls since the last take.
func (c *calls) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.log
	c.log = nil
	return out
}

type fakeGateway struct {
	calls        *calls
	mu           sync.Mutex
	routes       []workload.Route
	revs         map[workload.RevisionID]workload.Revision
	stats        []workload.Stat // returned by the next Collect
	blockIn      chan struct{}   // when set, SetRoutes waits for it
	blockCollect chan struct{}   // when set, Collect waits for it
}

func (g *fakeGateway) SetRoutes(routes []workload.Route) {
	g.mu.Lock()
	block := g.blockIn
	g.mu.Unlock()
	if block != nil {
		<-block
	}
	var desc []string
	for _, r := range routes {
		var ts []string
		for _, t := range r.Targets {
			ts = append(ts, fmt.Sprintf("%s=%d", t.Revision, t.Percent))
		}
		desc = append(desc, r.Host+"->"+strings.Join(ts, ","))
	}
	g.calls.add("gateway.SetRoutes %s", strings.Join(desc, " "))
	g.mu.Lock()
	g.routes = routes
	g.mu.Unlock()
}

func (g *fakeGateway) SetRevision(rev workload.Revision) {
	g.calls.add("gateway.SetRevision %s", rev.ID)
	g.mu.Lock()
	g.revs[rev.ID] = rev
	g.mu.Unlock()
}

func (g *fakeGateway) RemoveRevision(id workload.RevisionID) {
	g.calls.add("gateway.RemoveRevision %s", id)
	g.mu.Lock()
	delete(g.revs, id)
	g.mu.Unlock()
}

func (g *fakeGateway) SetActivatorInPath(id workload.RevisionID, inPath bool) {
	g.calls.add("gateway.SetActivatorInPath %s %v", id, inPath)
}

func (g *fakeGateway) Collect(now time.Time) []workload.Stat {
	g.mu.Lock()
	block := g.blockCollect
	g.mu.Unlock()
	if block != nil {
		<-block
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	out := g.stats
	g.stats = nil
	return out
}

type fakeSupervisor struct {
	calls  *calls
	mu     sync.Mutex
	scale  map[workload.RevisionID]int
	status map[workload.RevisionID]RevisionStatus
}

func (s *fakeSupervisor) Scale(rev workload.Revision, n int) {
	s.mu.Lock()
	old, had := s.scale[rev.ID]
	s.scale[rev.ID] = n
	s.mu.Unlock()
	if !had || old != n {
		s.calls.add("supervisor.Scale %s %d", rev.ID, n)
	}
}

func (s *fakeSupervisor) Remove(id workload.RevisionID) {
	s.calls.add("supervisor.Remove %s", id)
	s.mu.Lock()
	delete(s.scale, id)
	s.mu.Unlock()
}

func (s *fakeSupervisor) Status(id workload.RevisionID) RevisionStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status[id]
}

func (s *fakeSupervisor) set(id workload.RevisionID, st RevisionStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status[id] = st
}

func (s *fakeSupervisor) Replicas() []adminapi.Replica { return nil }
func (s *fakeSupervisor) Logs(string) (io.ReadCloser, error) {
	return nil, fmt.Errorf("fake supervisor keeps no logs")
}

// fakeScaler wants `initial` replicas of each revision until told otherwise by tick or poke.
type fakeScaler struct {
	calls   *calls
	initial int
	desired map[workload.RevisionID]int
	next    map[workload.RevisionID]int // what the next Tick decides
	records int
}

func (f *fakeScaler) Upsert(_ time.Time, id workload.RevisionID, annotations map[string]string, _ int) error {
	if v := annotations["autoscaling.knative.dev/min-scale"]; v == "7" {
		return fmt.Errorf("%w: min-scale %q", autoscaler.ErrInvalidAnnotations, v)
	}
	f.calls.add("scaler.Upsert %s", id)
	f.desired[id] = f.initial
	return nil
}

func (f *fakeScaler) decision(n int) autoscaler.Decision {
	return autoscaler.Decision{Desired: n, DeciderDesired: n, ActivatorInPath: n == 0}
}

func (f *fakeScaler) Decision(id workload.RevisionID) (autoscaler.Decision, bool) {
	n, ok := f.desired[id]
	return f.decision(n), ok
}

func (f *fakeScaler) Remove(id workload.RevisionID) {
	f.calls.add("scaler.Remove %s", id)
	delete(f.desired, id)
}

func (f *fakeScaler) Record(s workload.Stat) {
	f.records++
	f.calls.add("scaler.Record %s %g", s.Revision, s.Concurrency)
}

func (f *fakeScaler) Tick(now time.Time, ready map[workload.RevisionID]int) map[workload.RevisionID]autoscaler.Decision {
	var rs []string
	for _, id := range slices.Sorted(maps.Keys(ready)) {
		rs = append(rs, fmt.Sprintf("%s=%d", id, ready[id]))
	}
	f.calls.add("scaler.Tick %s", strings.Join(rs, " "))
	out := map[workload.RevisionID]autoscaler.Decision{}
	for id, n := range f.next {
		f.desired[id] = n
		out[id] = f.decision(n)
	}
	f.next = map[workload.RevisionID]int{}
	return out
}

func (f *fakeScaler) Poke(now time.Time, st workload.Stat, ready int) (autoscaler.Decision, bool) {
	id := st.Revision
	f.calls.add("scaler.Poke %s %g/%g at +%v (now +%v) ready %d", id, st.Concurrency, st.Requests,
		st.Time.Sub(epoch), now.Sub(epoch), ready)
	if n, ok := f.desired[id]; !ok || n > 0 {
		return autoscaler.Decision{}, false
	}
	f.desired[id] = 1
	return f.decision(1), true
}

func (f *fakeScaler) SetConfig(time.Time, *autoscaler.ClusterConfig) error {
	f.calls.add("scaler.SetConfig")
	return nil
}

// harness is one controller under test.
type harness struct {
	t        *testing.T
	ctx      context.Context
	calls    *calls
	store    *store.Store
	gw       *fakeGateway
	sup      *fakeSupervisor
	scaler   *fakeScaler
	clock    *testutil.FakeClock
	ctrl     *Controller
	stop     func()
	stopCtrl func()
	done     chan error // Run's result
}

var epoch = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

// newHarness builds a controller on a store in dir (a fresh one when empty) and runs it.
// Call it inside synctest.Test.
func newHarness(t *testing.T, dir string) *harness {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	st, err := store.Open(filepath.Join(dir, store.FileName), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := &calls{}
	h := &harness{
		t: t, calls: c, store: st, clock: testutil.NewFakeClock(epoch),
		gw:     &fakeGateway{calls: c, revs: map[workload.RevisionID]workload.Revision{}},
		sup:    &fakeSupervisor{calls: c, scale: map[workload.RevisionID]int{}, status: map[workload.RevisionID]RevisionStatus{}},
		scaler: &fakeScaler{calls: c, initial: 1, desired: map[workload.RevisionID]int{}, next: map[workload.RevisionID]int{}},
	}
	h.ctrl = New(Config{Store: st, Gateway: h.gw, Supervisor: h.sup, Scaler: h.scaler, Clock: h.clock,
		Resolve: reconciler.ResolveOptions{Self: "/usr/local/bin/infera"}})
	h.run()
	h.stop = sync.OnceFunc(func() {
		h.stopCtrl()
		st.Close()
	})
	t.Cleanup(h.stop)
	return h
}

// run starts the controller's Run and lets it settle.
func (h *harness) run() {
	ctx, cancel := context.WithCancel(h.t.Context())
	h.ctx = ctx
	done := make(chan error, 1)
	h.done = done
	go func() { done <- h.ctrl.Run(ctx) }()
	h.stopCtrl = sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("Run: %v", err)
		}
	})
	synctest.Wait()
}

// restartWith replaces the harness's controller with one that has a model cache, on the same
// store (call it before applying anything).
func (h *harness) restartWith(ds Datasets) {
	h.t.Helper()
	h.stopCtrl()
	h.ctrl = New(Config{Store: h.store, Gateway: h.gw, Supervisor: h.sup, Scaler: h.scaler, Clock: h.clock,
		Datasets: ds, Resolve: reconciler.ResolveOptions{Self: "/usr/local/bin/infera"}})
	h.run()
	h.calls.take()
}

// apply applies YAML documents through the controller, as the admin API does, and lets the
// loop settle.
func (h *harness) apply(yaml string) {
	h.t.Helper()
	res, err := h.ctrl.Apply(h.ctx, []manifest.Source{{Name: "test.yaml", Data: []byte(yaml)}}, false)
	if err != nil {
		h.t.Fatalf("apply: %v %v", err, res.Problems)
	}
	synctest.Wait()
}

func (h *harness) delete(yaml string) {
	h.t.Helper()
	if _, err := h.ctrl.Delete(h.ctx, []manifest.Source{{Name: "test.yaml", Data: []byte(yaml)}}); err != nil {
		h.t.Fatalf("delete: %v", err)
	}
	synctest.Wait()
}

// ready marks a revision's replicas ready as the supervisor would, and signals it.
func (h *harness) ready(id workload.RevisionID, n int) {
	h.sup.set(id, RevisionStatus{Ready: n, Running: n})
	h.ctrl.Kick()
	synctest.Wait()
}

func (h *harness) advance(d time.Duration) {
	h.clock.Advance(d)
	synctest.Wait()
}

// expect checks the calls since the last check, in order.
func (h *harness) expect(want ...string) {
	h.t.Helper()
	got := h.calls.take()
	if !slices.Equal(got, want) {
		h.t.Errorf("calls:\n got  %q\n want %q", got, want)
	}
}

// expectPlane checks that nothing but the scaling loop's stats and ticks was called.
func (h *harness) expectPlane() {
	h.t.Helper()
	for _, c := range h.calls.take() {
		if !strings.HasPrefix(c, "scaler.Record ") && !strings.HasPrefix(c, "scaler.Tick ") {
			h.t.Errorf("unexpected call: %s", c)
		}
	}
}

func (h *harness) revision(name string) adminapi.RevisionView {
	h.t.Helper()
	for _, r := range h.ctrl.Revisions() {
		if r.Name == name {
			return r
		}
	}
	h.t.Fatalf("no revision %s in %+v", name, h.ctrl.Revisions())
	return adminapi.RevisionView{}
}

func service(name, extra string) string {
	return fmt.Sprintf(`apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: %s
  namespace: default
spec:
  template:
    spec:
      containers:
        - image: example.com/app
          command: ["app"]
%s`, name, extra)
}
