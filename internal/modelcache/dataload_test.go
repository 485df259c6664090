package modelcache

import (
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/infera-dev/infera/internal/fluid"
)

func dataLoad(name, dataset string, policy fluid.Policy, targets ...string) DataLoadSpec {
	dl := &fluid.DataLoad{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	dl.Spec.Dataset = fluid.TargetDataset{Name: dataset, Namespace: "default"}
	dl.Spec.Policy = policy
	for _, t := range targets {
		dl.Spec.Target = append(dl.Spec.Target, fluid.TargetPath{Path: t})
	}
	return DataLoadSpec{Namespace: "default", Name: name, DataLoad: dl}
}

func (r *mgrRig) load(name string) DataLoadStatus {
	r.t.Helper()
	for _, st := range r.m.DataLoadStatuses() {
		if st.Name == name {
			return st
		}
	}
	r.t.Fatalf("no DataLoad %s", name)
	return DataLoadStatus{}
}

func (r *mgrRig) wantLoad(name string, p DataLoadPhase) DataLoadStatus {
	r.t.Helper()
	st := r.load(name)
	if st.Phase != p {
		r.t.Fatalf("DataLoad %s: phase %s (%s), want %s", name, st.Phase, st.Message, p)
	}
	return st
}

// TestDataLoadOnce checks a Once DataLoad: its targets are fetched first and it is Complete as
// soon as they are cached, while the rest of the dataset is still fetched.
func TestDataLoadOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeListSource("s3://b/m", map[string]int{"a/x.bin": 8 * kib, "b/y.bin": 8 * kib, "b/z.bin": 4 * kib})
		r := newMgrRig(t, "", map[string]Source{"s3://b/m": src}, func(c *Config) { c.FetchConcurrency = 1 })
		gate := r.fetcher.gate("a/x.bin")
		r.m.Set([]DatasetSpec{spec(dataset("m", "s3://b/m=/"), nil)})
		r.m.SetDataLoads([]DataLoadSpec{
			dataLoad("warm-b", "m", "", "/b"),
			dataLoad("missing", "nope", fluid.PolicyOnce),
			dataLoad("typo", "m", fluid.PolicyOnce, "/c"),
		})
		r.wantLoad("warm-b", DataLoadPending)
		r.run()
		synctest.Wait()

		st := r.wantLoad("warm-b", DataLoadComplete)
		if st.Runs != 1 || st.Duration != "0s" || !st.StartTime.Equal(mgrStart) || st.Policy != fluid.PolicyOnce || st.Message != "2 files (12 KiB) cached" {
			t.Errorf("warm-b: %+v", st)
		}
		if got := r.fetcher.fetched(); !slices.Equal(got, []string{"b/y.bin", "b/z.bin", "a/x.bin"}) {
			t.Errorf("fetch order %v, want the target /b first", got)
		}
		r.wantPhase("m", PhaseFetching)
		if st := r.wantLoad("missing", DataLoadPending); st.Message != "waiting for dataset default/nope" {
			t.Errorf("missing: %q", st.Message)
		}
		if st := r.wantLoad("typo", DataLoadFailed); !strings.Contains(st.Message, "target /c: no such path") {
			t.Errorf("typo: %q", st.Message)
		}
		close(gate)
		synctest.Wait()
		r.wantPhase("m", PhaseReady)
		// Once means once: time passing runs nothing again.
		r.advance(time.Hour)
		if st := r.load("warm-b"); st.Runs != 1 {
			t.Errorf("warm-b ran %d times", st.Runs)
		}
		r.stop()
	})
}

// TestDataLoadCron checks a Cron DataLoad with loadMetadata: Pending until its schedule, then
// a run at each time of it that lists the source again and fetches what changed.
func TestDataLoadCron(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeListSource("s3://b/m", map[string]int{"w1.bin": 8 * kib, "w2.bin": 8 * kib})
		r := newMgrRig(t, "", map[string]Source{"s3://b/m": src}, nil)
		r.m.Set([]DatasetSpec{spec(dataset("m", "s3://b/m"), nil)})
		dl := dataLoad("nightly", "m", fluid.PolicyCron)
		dl.DataLoad.Spec.Schedule = "*/5 * * * *"
		dl.DataLoad.Spec.LoadMetadata = true
		r.m.SetDataLoads([]DataLoadSpec{dl})
		r.run()
		synctest.Wait()
		r.wantPhase("m", PhaseReady)
		lists := src.listCount()

		five := time.Date(2026, 3, 1, 0, 5, 0, 0, time.UTC)
		st := r.wantLoad("nightly", DataLoadPending)
		if !st.NextScheduleTime.Equal(five) || st.Runs != 0 || st.Duration != "" {
			t.Errorf("before its schedule: %+v", st)
		}
		r.advance(five.Sub(r.clk.Now()) - time.Second)
		r.wantLoad("nightly", DataLoadPending)

		r.advance(time.Second)
		st = r.wantLoad("nightly", DataLoadComplete)
		if st.Runs != 1 || !st.LastScheduleTime.Equal(five) || !st.LastSuccessfulTime.Equal(five) ||
			!st.NextScheduleTime.Equal(five.Add(5*time.Minute)) || st.Duration != "0s" {
			t.Errorf("after the first run: %+v", st)
		}
		if src.listCount() != lists+1 || len(r.fetcher.fetched()) != 2 {
			t.Errorf("loadMetadata: %d lists (want %d), fetched %v (want nothing new)", src.listCount(), lists+1, r.fetcher.fetched())
		}

		// The source changes; the next run fetches the changed object, and is Executing while it
		// does.
		src.put("w2.bin", 12*kib, "v2")
		gate := r.fetcher.gate("w2.bin")
		r.advance(5 * time.Minute)
		st = r.wantLoad("nightly", DataLoadExecuting)
		r.wantPhase("m", PhaseFetching)
		r.advance(3 * time.Second)
		if st = r.load("nightly"); st.Duration != "3s" || st.Runs != 2 {
			t.Errorf("executing: duration %q, runs %d", st.Duration, st.Runs)
		}
		close(gate)
		synctest.Wait()
		st = r.wantLoad("nightly", DataLoadComplete)
		if st.Duration != "3s" || !st.LastScheduleTime.Equal(five.Add(5*time.Minute)) {
			t.Errorf("after the second run: %+v", st)
		}
		if got := r.fetcher.fetched(); !slices.Equal(got[2:], []string{"w2.bin"}) {
			t.Errorf("fetched %v, want w2.bin again", got)
		}
		if ds := r.wantPhase("m", PhaseReady); ds.Total != 20*kib {
			t.Errorf("dataset total %d, want %d", ds.Total, 20*kib)
		}

		// A listing that fails fails the run, and the cached copy stays served.
		src.setListErr(ErrAccessDenied)
		r.advance(5 * time.Minute)
		if st = r.wantLoad("nightly", DataLoadFailed); !strings.Contains(st.Message, "access denied") {
			t.Errorf("failed run: %q", st.Message)
		}
		r.wantPhase("m", PhaseReady)
		r.stop()
	})
}

// TestDataLoadOnEvent checks an OnEvent DataLoad: a run when given, then one each time a
// periodic listing finds the source changed.
func TestDataLoadOnEvent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeListSource("s3://b/m", map[string]int{"w.bin": 8 * kib})
		r := newMgrRig(t, "", map[string]Source{"s3://b/m": src}, func(c *Config) { c.WatchInterval = time.Minute })
		r.m.Set([]DatasetSpec{spec(dataset("m", "s3://b/m"), nil)})
		r.m.SetDataLoads([]DataLoadSpec{dataLoad("follow", "m", fluid.PolicyOnEvent)})
		r.run()
		synctest.Wait()
		if st := r.wantLoad("follow", DataLoadComplete); st.Runs != 1 {
			t.Errorf("runs %d, want 1", st.Runs)
		}

		// Unchanged: listed, nothing run.
		lists := src.listCount()
		r.advance(time.Minute)
		if st := r.load("follow"); st.Runs != 1 || src.listCount() != lists+1 {
			t.Errorf("unchanged source: %d runs, %d lists (want 1, %d)", st.Runs, src.listCount(), lists+1)
		}
		// Changed: a run that fetches the new object.
		src.put("new.bin", 4*kib, "v1")
		r.advance(time.Minute)
		st := r.wantLoad("follow", DataLoadComplete)
		if st.Runs != 2 {
			t.Errorf("runs %d, want 2", st.Runs)
		}
		if got := r.fetcher.fetched(); !slices.Equal(got, []string{"w.bin", "new.bin"}) {
			t.Errorf("fetched %v", got)
		}
		r.stop()
	})
}

func TestDataLoadRunAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeListSource("s3://b/m", map[string]int{"a/w.bin": 8 * kib, "b/w.bin": 8 * kib})
		r := newMgrRig(t, "", map[string]Source{"s3://b/m": src}, nil)
		gate := r.fetcher.gate("a/w.bin")
		first := dataLoad("first", "m", fluid.PolicyOnce, "/a")
		second := dataLoad("second", "m", fluid.PolicyOnce, "/b")
		second.DataLoad.Spec.RunAfter = &fluid.OperationRef{ObjectRef: fluid.ObjectRef{Kind: "DataLoad", Name: "first"}}
		r.m.Set([]DatasetSpec{spec(dataset("m", "s3://b/m=/"), nil)})
		r.m.SetDataLoads([]DataLoadSpec{first, second})
		r.run()
		synctest.Wait()
		r.wantLoad("first", DataLoadExecuting)
		if st := r.wantLoad("second", DataLoadPending); st.Message != "waiting for DataLoad default/first to complete" {
			t.Errorf("second: %q", st.Message)
		}
		close(gate)
		synctest.Wait()
		r.wantLoad("first", DataLoadComplete)
		r.wantLoad("second", DataLoadComplete)
		r.stop()
	})
}
