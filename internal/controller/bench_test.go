package controller

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/infera-dev/infera/internal/manifest"
	"github.com/infera-dev/infera/internal/reconciler"
	"github.com/infera-dev/infera/internal/store"
	"github.com/infera-dev/infera/internal/testutil"
	"github.com/infera-dev/infera/internal/workload"
)

// benchController is a synced controller over n ready services (fakes for the data plane, a
// real store), for driving passes by hand.
func benchController(b *testing.B, n int) (*Controller, *fakeSupervisor) {
	b.Helper()
	st, err := store.Open(filepath.Join(b.TempDir(), store.FileName), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	c := &calls{}
	sup := &fakeSupervisor{calls: c, scale: map[workload.RevisionID]int{}, status: map[workload.RevisionID]RevisionStatus{}}
	ctrl := New(Config{Store: st, Gateway: &fakeGateway{calls: c, revs: map[workload.RevisionID]workload.Revision{}},
		Supervisor: sup, Scaler: &fakeScaler{calls: c, initial: 1, desired: map[workload.RevisionID]int{}, next: map[workload.RevisionID]int{}},
		Clock: testutil.NewFakeClock(epoch), Resolve: reconciler.ResolveOptions{Self: "/bin/infera"}})
	var docs []string
	for i := range n {
		docs = append(docs, service(fmt.Sprintf("svc-%04d", i), ""))
		sup.status[workload.RevisionID(fmt.Sprintf("default/svc-%04d-00001", i))] = RevisionStatus{Ready: 1, Running: 1}
	}
	ctx := context.Background()
	if res, err := ctrl.Apply(ctx, []manifest.Source{{Name: "bench.yaml", Data: []byte(strings.Join(docs, "---\n"))}}, false); err != nil {
		b.Fatalf("apply: %v %v", err, res.Problems)
	}
	if err := ctrl.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	// Settle: the first passes write the revisions' Ready status.
	for range 3 {
		if err := ctrl.pass(ctx, changes{}, false); err != nil {
			b.Fatal(err)
		}
	}
	if got := len(ctrl.Services()); got != n {
		b.Fatalf("%d services in the view, want %d", got, n)
	}
	return ctrl, sup
}

// BenchmarkPass is the reconcile pass at 100 and 1,000 services:
//   - unchanged: a kick or resync with nothing changed (the budget: under 1 ms at 1,000 and
//     under 100 allocations per service);
//   - one-changed: one revision's ready replicas changed (one service computed and written);
//   - all-recomputed: every service computed again, as after a config-domain change, which is
//     what every pass cost before passes were incremental (the anchor).
func BenchmarkPass(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("services=%d/unchanged", n), func(b *testing.B) {
			ctrl, _ := benchController(b, n)
			b.ReportAllocs()
			for b.Loop() {
				if err := ctrl.pass(ctx, changes{}, true); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(testing.AllocsPerRun(10, func() { ctrl.pass(ctx, changes{}, true) }))/float64(n), "allocs/service")
		})
		b.Run(fmt.Sprintf("services=%d/one-changed", n), func(b *testing.B) {
			ctrl, sup := benchController(b, n)
			id := workload.RevisionID("default/svc-0000-00001")
			ready := 1
			b.ReportAllocs()
			for b.Loop() {
				ready = 3 - ready // 1, 2, 1, ...
				sup.set(id, RevisionStatus{Ready: ready, Running: ready})
				if err := ctrl.pass(ctx, changes{}, false); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("services=%d/all-recomputed", n), func(b *testing.B) {
			ctrl, _ := benchController(b, n)
			b.ReportAllocs()
			for b.Loop() {
				if err := ctrl.pass(ctx, changes{knative: true}, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
