package controller

import (
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/infera-dev/infera/internal/adminapi"
	"github.com/infera-dev/infera/internal/coldstart"
	"github.com/infera-dev/infera/internal/reconciler"
	"github.com/infera-dev/infera/internal/workload"
)

// withColdStarts replaces the harness's controller with one that tracks cold starts (and has
// a model cache when ds is set), on the same store; call it before applying anything. The
// test reports for the supervisor and the gateway to the tracker it returns.
func (h *harness) withColdStarts(ds Datasets) *coldstart.Tracker {
	h.t.Helper()
	tr, err := coldstart.New(coldstart.Config{})
	if err != nil {
		h.t.Fatal(err)
	}
	h.stopCtrl()
	cfg := Config{Store: h.store, Gateway: h.gw, Supervisor: h.sup, Scaler: h.scaler, Clock: h.clock,
		ColdStarts: tr, Resolve: reconciler.ResolveOptions{Self: "/usr/local/bin/infera"}}
	if ds != nil {
		cfg.Datasets = ds
	}
	h.ctrl = New(cfg)
	h.run()
	h.calls.take()
	return tr
}

// replicaUp reports, as the supervisor does, a replica of id created now that runs after
// started and is Ready after ready more; the harness's clock ends at its Ready.
func (h *harness) replicaUp(tr *coldstart.Tracker, id workload.RevisionID, name string, started, ready time.Duration) {
	created := h.clock.Now()
	h.advance(started)
	tr.Replica(coldstart.Replica{Revision: id, Name: name, Created: created, Started: h.clock.Now()})
	h.advance(ready)
	tr.Replica(coldstart.Replica{Revision: id, Name: name, Created: created, Started: created.Add(started), Ready: h.clock.Now()})
}

func f64(v float64) *float64 { return &v }

func checkColdStart(t *testing.T, got *adminapi.ColdStartView, want adminapi.ColdStartView) {
	t.Helper()
	if got == nil {
		t.Fatalf("no last cold start, want %+v", want)
	}
	eq := func(a, b *float64) bool { return (a == nil && b == nil) || (a != nil && b != nil && *a == *b) }
	if !got.At.Equal(want.At) || got.Trigger != want.Trigger || got.Replica != want.Replica ||
		!eq(got.DatasetMs, want.DatasetMs) || got.PlacementMs != want.PlacementMs || got.ProcessStartMs != want.ProcessStartMs ||
		got.ReadinessMs != want.ReadinessMs || !eq(got.FirstByteMs, want.FirstByteMs) || got.TotalMs != want.TotalMs {
		t.Errorf("last cold start\n got  %s\n want %s", coldString(got), coldString(&want))
	}
}

func coldString(v *adminapi.ColdStartView) string {
	opt := func(p *float64) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprint(*p)
	}
	return fmt.Sprintf("at +%v %s %s dataset %s placement %g process %g readiness %g first byte %s total %g",
		v.At.Sub(epoch), v.Trigger, v.Replica, opt(v.DatasetMs), v.PlacementMs, v.ProcessStartMs, v.ReadinessMs, opt(v.FirstByteMs), v.TotalMs)
}

// TestColdStartFromZero: the scaling loop opens a scale from zero at the held request's
// arrival (its poke, handled later), before the decision that starts the replica; the
// supervisor's and the gateway's reports finish it, and the revision's view shows it. A
// decision to scale to zero before the next replica was Ready drops that one, and the next
// poke begins afresh.
func TestColdStartFromZero(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "")
		tr := h.withColdStarts(nil)
		h.scaler.initial = 0
		h.apply(service("llm", ""))
		if r := h.revision("llm-00001"); r.LastColdStart != nil {
			t.Fatalf("a revision added at zero has had a cold start: %+v", r.LastColdStart)
		}

		// Hold the loop inside the +1s stats collection while the request arrives, so that it
		// handles the poke only after the clock moved on.
		release := make(chan struct{})
		h.gw.mu.Lock()
		h.gw.blockCollect = release
		h.gw.mu.Unlock()
		h.advance(time.Second)
		h.calls.take()
		h.ctrl.Poke(llm1) // the request arrives at +1s
		h.clock.Advance(2 * time.Millisecond)
		h.gw.mu.Lock()
		h.gw.blockCollect = nil
		h.gw.mu.Unlock()
		close(release)
		synctest.Wait() // the loop handles the poke at +1.002s and starts a replica
		h.expect(
			"scaler.Poke default/llm-00001 1/1 at +1s (now +1.002s) ready 0",
			"gateway.SetActivatorInPath default/llm-00001 false",
			"supervisor.Scale default/llm-00001 1",
		)
		h.replicaUp(tr, llm1, "llm-00001-aaaaa", 5*time.Millisecond, 300*time.Millisecond)
		if r := h.revision("llm-00001"); r.LastColdStart != nil {
			t.Fatalf("finished before the held request's first byte: %+v", r.LastColdStart)
		}
		h.advance(3 * time.Millisecond)
		tr.FirstByte(llm1, "llm-00001-aaaaa", h.clock.Now())
		checkColdStart(t, h.revision("llm-00001").LastColdStart, adminapi.ColdStartView{
			At: epoch.Add(time.Second), Trigger: "request", Replica: "llm-00001-aaaaa",
			PlacementMs: 2, ProcessStartMs: 5, ReadinessMs: 300, FirstByteMs: f64(3), TotalMs: 310,
		})

		// Back to zero, then a poke whose replica is scaled away before it is Ready.
		h.scaler.next[llm1] = 0
		h.advance(2 * time.Second)
		h.ctrl.Poke(llm1)
		synctest.Wait()
		h.scaler.next[llm1] = 0
		h.advance(2 * time.Second) // a tick decides zero again: that cold start is dropped
		h.ctrl.Poke(llm1)          // and this one begins afresh
		pokedAt := h.clock.Now()
		synctest.Wait()
		h.advance(time.Millisecond)
		h.replicaUp(tr, llm1, "llm-00001-ccccc", 10*time.Millisecond, 20*time.Millisecond)
		tr.FirstByte(llm1, "llm-00001-ccccc", h.clock.Now())
		checkColdStart(t, h.revision("llm-00001").LastColdStart, adminapi.ColdStartView{
			At: pokedAt, Trigger: "request", Replica: "llm-00001-ccccc",
			PlacementMs: 1, ProcessStartMs: 10, ReadinessMs: 20, FirstByteMs: f64(0), TotalMs: 31,
		})
	})
}

// TestColdStartAfterDatasetWait: a revision Pending on its Dataset starts once the cache has
// it; its first start's dataset phase runs from when it first went Pending (not from the last
// re-check), and a first start with no request held ends at Ready.
func TestColdStartAfterDatasetWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "")
		ds := &fakeDatasets{calls: h.calls, paths: map[string]string{}, fails: map[string]string{}}
		tr := h.withColdStarts(ds)
		id := workload.RevisionID("default/sd-00001")
		h.apply(datasetYAML + service("sd", mountsDataset)) // Pending at epoch
		if r := h.revision("sd-00001"); r.State != adminapi.StatePending || r.LastColdStart != nil {
			t.Fatalf("waiting for its dataset: %+v", r)
		}
		h.advance(time.Second)
		h.ctrl.Recheck() // still fetching: it stays Pending, since epoch
		synctest.Wait()
		h.advance(2 * time.Second)
		ds.mu.Lock()
		ds.paths["default/oss-data"] = "/cache/default/oss-data"
		ds.mu.Unlock()
		h.ctrl.Recheck()
		synctest.Wait() // started at +3s with one replica wanted: its first start
		if r := h.revision("sd-00001"); r.State != adminapi.StateRunning {
			t.Fatalf("after the dataset: %+v", r)
		}
		h.advance(time.Millisecond)
		h.replicaUp(tr, id, "sd-00001-aaaaa", 4*time.Millisecond, 95*time.Millisecond)
		checkColdStart(t, h.revision("sd-00001").LastColdStart, adminapi.ColdStartView{
			At: epoch, Trigger: "first-start", Replica: "sd-00001-aaaaa",
			DatasetMs: f64(3000), PlacementMs: 1, ProcessStartMs: 4, ReadinessMs: 95, TotalMs: 3100,
		})
	})
}

// TestColdStartFirstStartWithoutDataset: a revision that waited for nothing has no dataset
// phase, and its first start begins at the decision to start it.
func TestColdStartFirstStartWithoutDataset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "")
		tr := h.withColdStarts(nil)
		h.advance(time.Second)
		h.apply(service("plain", ""))
		begun := h.clock.Now()
		id := workload.RevisionID("default/plain-00001")
		h.advance(2 * time.Millisecond)
		h.replicaUp(tr, id, "plain-00001-aaaaa", time.Millisecond, 7*time.Millisecond)
		checkColdStart(t, h.revision("plain-00001").LastColdStart, adminapi.ColdStartView{
			At: begun, Trigger: "first-start", Replica: "plain-00001-aaaaa",
			PlacementMs: 2, ProcessStartMs: 1, ReadinessMs: 7, TotalMs: 10,
		})
	})
}

// TestBlockDatasetWait: only a wait for a Dataset is a cold start's dataset phase.
func TestBlockDatasetWait(t *testing.T) {
	since := epoch.Add(time.Minute)
	tests := []struct {
		name string
		b    block
		want time.Time
	}{
		{"pending on a dataset", block{pending: true, reason: ReasonDatasetNotReady, since: since}, since},
		{"pending on a secret", block{pending: true, reason: "SecretMissing", since: since}, time.Time{}},
		{"failed dataset", block{reason: "DatasetFailed"}, time.Time{}},
		{"not blocked", block{}, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.b.datasetWait(); !got.Equal(tt.want) {
				t.Errorf("datasetWait = %v, want %v", got, tt.want)
			}
		})
	}
}
