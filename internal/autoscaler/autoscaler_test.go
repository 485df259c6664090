package autoscaler

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/workload"
)

var t0 = time.Unix(1_700_000_000, 0)

func sec(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

// drive records a constant load c for seconds (from, to] and ticks every
// two seconds, with ready pods following Desired at once; it returns the
// last decision.
func drive(a *Autoscaler, id workload.RevisionID, ready *int, from, to int, c float64) Decision {
	var d Decision
	for s := from + 1; s <= to; s++ {
		a.Record(workload.Stat{Revision: id, Time: sec(s), Concurrency: c, Requests: c})
		if s%2 == 0 {
			d = a.Tick(sec(s), map[workload.RevisionID]int{id: *ready})[id]
			*ready = d.Desired
		}
	}
	return d
}

func TestAutoscalerLifecycle(t *testing.T) {
	const id = workload.RevisionID("default/llm-00001")
	a := New(nil)
	if err := a.Upsert(sec(0), id, map[string]string{"autoscaling.knative.dev/window": "10s"}, 5); err != nil {
		t.Fatal(err)
	}
	d, ok := a.Decision(id)
	if !ok || d.Desired != 1 || d.DeciderDesired != -1 || d.Target != 3.5 || !d.ActivatorInPath {
		t.Fatalf("after Upsert: %+v", d)
	}
	ready := 1
	// 35 requests in flight against a target of 3.5 per pod: panic to 10.
	d = drive(a, id, &ready, 0, 4, 35)
	if d.Desired != 10 || !d.Panic || d.StableConcurrency != 35 || d.Active != Active {
		t.Fatalf("under load: %+v", d)
	}
	// Load stops: the revision goes to zero a window plus the grace later,
	// never down while panicking.
	zeroAt, prev := 0, d
	for s := 5; s <= 200 && zeroAt == 0; s++ {
		a.Record(workload.Stat{Revision: id, Time: sec(s)})
		if s%2 == 0 {
			d = a.Tick(sec(s), map[workload.RevisionID]int{id: ready})[id]
			if prev.Panic && d.Panic && d.Desired < prev.Desired {
				t.Fatalf("at %ds: scaled down from %d to %d while panicking", s, prev.Desired, d.Desired)
			}
			ready, prev = d.Desired, d
			if d.Desired == 0 {
				zeroAt = s
			}
		}
	}
	// Panic (entered at 2 s, ready 1) ends at 14 s; then down by the
	// scale-down rate 2: 5, 2, 1, and the decider wants 0 at 20 s. Active
	// since 2 s, longer than the window: inactive at once, keeping the pod.
	// The burst capacity was negative all along (10 x 5 < 211), so the
	// gateway has backed the revision since 0 s and the 30 s grace ends at
	// 30 s (Knative's fast path).
	if zeroAt != 30 || d.Active != Inactive || !d.ActivatorInPath {
		t.Fatalf("zero at %ds (want 44): %+v", zeroAt, d)
	}
	// Idle: a tick changes nothing; a poke decides at once.
	if d = a.Tick(sec(300), nil)[id]; d.Desired != 0 {
		t.Fatalf("idle: %+v", d)
	}
	d, poked := a.Poke(sec(301), demand(id, sec(301)), 0)
	if !poked || d.Desired != 1 || d.Active != Activating {
		t.Fatalf("poke at zero: %v %+v", poked, d)
	}
	// A second poke in the same cold start neither decides nor records again.
	if _, again := a.Poke(sec(301), demand(id, sec(301)), 0); again {
		t.Fatal("second poke decided again")
	}
	// The gateway's next stat leaves out the request the poke recorded.
	a.Record(workload.Stat{Revision: id, Time: sec(302), Concurrency: 1, Requests: 1})
	d = a.Tick(sec(302), map[workload.RevisionID]int{id: 1})[id]
	if d.StableConcurrency != 0.5 || d.StableRPS != 0.5 || d.Desired != 1 || d.Active != Active {
		t.Fatalf("after poke: %+v", d)
	}
	a.Remove(id)
	if _, ok := a.Poke(sec(303), demand(id, sec(303)), 0); ok || a.Len() != 0 {
		t.Fatal("removed revision still known")
	}
	a.Record(workload.Stat{Revision: id, Time: sec(304), Concurrency: 3}) // dropped, no panic
}

func TestAutoscalerUpsert(t *testing.T) {
	const id = workload.RevisionID("default/m-00001")
	a := New(nil)
	err := a.Upsert(sec(0), id, map[string]string{"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev", "autoscaling.knative.dev/metric": "cpu"}, 0)
	if !errors.Is(err, ErrNotKPA) || a.Len() != 0 {
		t.Fatalf("hpa: %v", err)
	}
	if err := a.Upsert(sec(0), id, map[string]string{"autoscaling.knative.dev/target": "x"}, 0); !errors.Is(err, ErrInvalidAnnotations) {
		t.Fatalf("bad target: %v", err)
	}
	anns := map[string]string{"autoscaling.knative.dev/min-scale": "2", "autoscaling.knative.dev/max-scale": "3"}
	if err := a.Upsert(sec(0), id, anns, 10); err != nil {
		t.Fatal(err)
	}
	if d := a.Tick(sec(2), nil)[id]; d.Desired != 2 || d.Target != 7 {
		t.Fatalf("min-scale: %+v", d)
	}
	// Same inputs: nothing changes. New containerConcurrency: new target.
	if err := a.Upsert(sec(3), id, anns, 10); err != nil {
		t.Fatal(err)
	}
	if err := a.Upsert(sec(3), id, anns, 20); err != nil {
		t.Fatal(err)
	}
	ready := 2
	if d := drive(a, id, &ready, 3, 10, 1000); d.Desired != 3 || d.Target != 14 {
		t.Fatalf("max-scale: %+v", d)
	}
	// Unreachable: min-scale no longer holds.
	if err := a.SetReachable(sec(10), id, false); err != nil {
		t.Fatal(err)
	}
	// config-autoscaler: all or nothing.
	bad, err := ParseClusterConfig(map[string]string{"max-scale-limit": "2", "max-scale": "2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetConfig(sec(11), bad); err == nil {
		t.Fatal("max-scale 3 accepted under max-scale-limit 2")
	}
	good, err := ParseClusterConfig(map[string]string{"container-concurrency-target-percentage": "50"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetConfig(sec(11), good); err != nil {
		t.Fatal(err)
	}
	if d := a.Tick(sec(12), map[workload.RevisionID]int{id: 3})[id]; d.Target != 10 {
		t.Fatalf("after SetConfig: %+v", d)
	}
}

// demand is the gateway's stat for a request that found id with no ready
// replica, arriving at at: what it hands Poke.
func demand(id workload.RevisionID, at time.Time) workload.Stat {
	return workload.Stat{Revision: id, Time: at, Concurrency: 1, Requests: 1}
}

// TestAutoscalerPokeWithoutData: a poke with the gateway's stat decides at
// once for a revision whose decider has made no recommendation yet, on
// every path there: initial-scale 0 that never had traffic, right after a
// restart, and a revision still activating its first replica.
func TestAutoscalerPokeWithoutData(t *testing.T) {
	const id = workload.RevisionID("default/m-00001")
	zero, _ := ParseClusterConfig(map[string]string{"allow-zero-initial-scale": "true"})
	initialZero := map[string]string{"autoscaling.knative.dev/initial-scale": "0"}
	tests := []struct {
		name        string
		cc          *ClusterConfig
		annotations map[string]string
		idle        int           // seconds of ticks without data before the request
		at          time.Duration // the request's arrival after the last tick
		before      int           // Desired before the poke
		// The Active condition after the poke. The poke that comes before
		// any tick is the revision's first reconcile, where Knative's
		// activeThreshold is still the initial scale, 0: Inactive, with one
		// replica wanted; the next reconcile says Activating.
		active ActiveState
	}{
		{"initial-scale 0, never had traffic", zero, initialZero, 3600, 700 * time.Millisecond, 0, Activating},
		{"initial-scale 0, right after a restart", zero, initialZero, 0, 20 * time.Millisecond, 0, Inactive},
		{"initial-scale 1, first replica starting", nil, nil, 0, 1500 * time.Millisecond, 1, Activating},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := New(tc.cc)
			if err := a.Upsert(sec(0), id, tc.annotations, 0); err != nil {
				t.Fatal(err)
			}
			for s := 2; s <= tc.idle; s += 2 {
				if d := a.Tick(sec(s), nil)[id]; d.Desired != tc.before || d.DeciderDesired != -1 {
					t.Fatalf("idle tick at %ds: %+v", s, d)
				}
			}
			now := sec(tc.idle).Add(tc.at)
			if d, _ := a.Decision(id); d.Desired != tc.before || d.DeciderDesired != -1 {
				t.Fatalf("before the request: %+v", d)
			}
			// A stat without load is recorded and decides nothing.
			if _, poked := a.Poke(now, workload.Stat{Revision: id, Time: now}, 0); poked {
				t.Fatal("a stat without load decided")
			}
			d, poked := a.Poke(now, demand(id, now), 0)
			if !poked || d.Desired != 1 || d.DeciderDesired != 1 || d.Active != tc.active || d.StableConcurrency != 1 {
				t.Fatalf("poke: %v %+v", poked, d)
			}
			// The gateway's stat for that second leaves the request out.
			end := now.Truncate(time.Second).Add(time.Second)
			a.Record(workload.Stat{Revision: id, Time: end, Concurrency: 1, Requests: 1})
			next := sec(tc.idle + 2)
			if next.Before(end) {
				next = next.Add(2 * time.Second)
			}
			if d := a.Tick(next, nil)[id]; d.Desired != 1 || d.StableConcurrency != 0.5 || d.Active != Activating {
				t.Fatalf("next tick: %+v", d)
			}
		})
	}
	if _, poked := New(nil).Poke(sec(1), demand(id, sec(1)), 0); poked {
		t.Error("an unknown revision was poked")
	}
}

// TestAutoscalerProperties drives random revisions with random loads and
// checks, every tick: never above max-scale, never below min-scale while
// reachable (and at least one pod when scale to zero is off), and never
// down while panicking.
func TestAutoscalerProperties(t *testing.T) {
	t.Parallel()
	runs := 80
	if testing.Short() {
		runs = 20
	}
	rng := rand.New(rand.NewPCG(11, 12))
	var panicHeld, atMax, atMin, zero int
	for run := range runs {
		minS, maxS := rng.IntN(3), 0
		if rng.IntN(2) == 0 {
			maxS = minS + 1 + rng.IntN(8)
		}
		anns := map[string]string{
			"autoscaling.knative.dev/window":                       strconv.Itoa(6+rng.IntN(60)) + "s",
			"autoscaling.knative.dev/panic-threshold-percentage":   []string{"110", "200", "400"}[rng.IntN(3)],
			"autoscaling.knative.dev/target-burst-capacity":        []string{"-1", "0", "211"}[rng.IntN(3)],
			"autoscaling.knative.dev/metric":                       []string{"concurrency", "rps"}[rng.IntN(2)],
			"autoscaling.knative.dev/activation-scale":             strconv.Itoa(2 + rng.IntN(3)),
			"autoscaling.knative.dev/scale-down-delay":             strconv.Itoa(rng.IntN(3)*10) + "s",
			"autoscaling.knative.dev/metric-aggregation-algorithm": []string{"linear", "weighted-exponential"}[rng.IntN(2)],
			"autoscaling.knative.dev/min-scale":                    strconv.Itoa(minS),
			"autoscaling.knative.dev/max-scale":                    strconv.Itoa(maxS),
		}
		delay := anns["autoscaling.knative.dev/scale-down-delay"] != "0s"
		if act, _ := strconv.Atoi(anns["autoscaling.knative.dev/activation-scale"]); maxS > 0 && act > maxS {
			delete(anns, "autoscaling.knative.dev/activation-scale")
		}
		data := map[string]string{
			"enable-scale-to-zero":       strconv.FormatBool(rng.IntN(4) != 0),
			"scale-to-zero-grace-period": strconv.Itoa(1+rng.IntN(30)) + "s",
			"max-scale-down-rate":        []string{"1.5", "2", "8"}[rng.IntN(3)],
		}
		cc, err := ParseClusterConfig(data)
		if err != nil {
			t.Fatal(err)
		}
		id := workload.RevisionID(fmt.Sprintf("default/r-%05d", run))
		a := New(cc)
		if err := a.Upsert(sec(0), id, anns, []int{0, 1, 4, 10}[rng.IntN(4)]); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		reachable := true
		ready, level := 1, rng.Float64()*50
		var prev Decision
		idleUntil := 0
		for s := 1; s <= 1000; s++ {
			switch r := rng.IntN(1000); {
			case s < idleUntil:
			case r < 8:
				level, idleUntil = 0, s+rng.IntN(400)
			case r < 14:
				level = rng.Float64() * 400
			default:
				level = max(0, level+rng.NormFloat64()*3)
			}
			if s < idleUntil {
				level = 0
			}
			if level > 0 || rng.IntN(2) == 0 {
				a.Record(workload.Stat{Revision: id, Time: sec(s), Concurrency: level, Requests: level})
			}
			if rng.IntN(500) == 0 {
				reachable = !reachable
				if err := a.SetReachable(sec(s), id, reachable); err != nil {
					t.Fatal(err)
				}
			}
			if s%2 != 0 {
				continue
			}
			d := a.Tick(sec(s), map[workload.RevisionID]int{id: ready})[id]
			where := fmt.Sprintf("run %d at %ds (%v, %v, reachable %v)", run, s, anns, data, reachable)
			if maxS > 0 && d.Desired > maxS {
				t.Fatalf("%s: desired %d above max %d", where, d.Desired, maxS)
			}
			if reachable && d.Desired < minS {
				t.Fatalf("%s: desired %d below min %d", where, d.Desired, minS)
			}
			if !cc.EnableScaleToZero && d.Desired < 1 {
				t.Fatalf("%s: desired %d with scale to zero off", where, d.Desired)
			}
			// With a scale-down-delay the recommendation is a maximum over
			// the delay window, and a pre-panic maximum ageing out of it
			// lowers it while panicking, in Knative too (the differential
			// tests cover it); the panic hold itself is checked without.
			if !delay && prev.Panic && d.Panic && (d.Desired < prev.Desired || d.DeciderDesired < prev.DeciderDesired) {
				t.Fatalf("%s: down from %d (decider %d) to %d (decider %d) while panicking",
					where, prev.Desired, prev.DeciderDesired, d.Desired, d.DeciderDesired)
			}
			switch {
			case !delay && prev.Panic && d.Panic:
				panicHeld++
			case maxS > 0 && d.Desired == maxS && d.DeciderDesired > maxS:
				atMax++
			case minS > 0 && d.Desired == minS && d.DeciderDesired < minS:
				atMin++
			case d.Desired == 0:
				zero++
			}
			prev = d
			// Pods follow with some lag.
			switch {
			case ready < d.Desired:
				ready += 1 + rng.IntN(d.Desired-ready)
			case ready > d.Desired:
				ready -= 1 + rng.IntN(ready-d.Desired)
			}
		}
	}
	t.Logf("%d runs: %d ticks held in panic, %d capped at max, %d lifted to min, %d at zero", runs, panicHeld, atMax, atMin, zero)
	if panicHeld == 0 || atMax == 0 || atMin == 0 || zero == 0 {
		t.Error("the random runs missed a case the properties are about")
	}
}

// BenchmarkTick1000 is one tick for 1,000 revisions that all have fresh
// stats (the budget is 10 ms).
func BenchmarkTick1000(b *testing.B) {
	for _, alg := range []string{"linear", "weighted-exponential"} {
		b.Run(alg, func(b *testing.B) {
			a := New(nil)
			ready := map[workload.RevisionID]int{}
			ids := make([]workload.RevisionID, 1000)
			for i := range ids {
				ids[i] = workload.RevisionID(fmt.Sprintf("default/r-%05d", i))
				anns := map[string]string{"autoscaling.knative.dev/metric-aggregation-algorithm": alg}
				if err := a.Upsert(t0, ids[i], anns, 10); err != nil {
					b.Fatal(err)
				}
				ready[ids[i]] = 1 + i%5
			}
			s := 0
			record := func() {
				s++
				for i, id := range ids {
					a.Record(workload.Stat{Revision: id, Time: sec(s), Concurrency: float64(i%50) + float64(s%7), Requests: float64(i % 30)})
				}
			}
			for range 120 { // fill the stable windows
				record()
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				record()
				record()
				b.StartTimer()
				if d := a.Tick(sec(s), ready); len(d) != len(ids) {
					b.Fatal(len(d))
				}
			}
		})
	}
}

// BenchmarkIdleRevisionMemory reports the heap an idle revision costs
// (autoscaled, metric windows released).
func BenchmarkIdleRevisionMemory(b *testing.B) {
	const n = 10_000
	ids := make([]workload.RevisionID, n)
	for i := range ids {
		ids[i] = workload.RevisionID(fmt.Sprintf("default/r-%05d", i))
	}
	anns := map[string]string{"autoscaling.knative.dev/target": "10"}
	var perRev float64
	for i := 0; i < b.N; i++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		a := New(nil)
		for _, id := range ids {
			if err := a.Upsert(t0, id, anns, 0); err != nil {
				b.Fatal(err)
			}
			a.Record(workload.Stat{Revision: id, Time: sec(1), Concurrency: 3, Requests: 3})
		}
		a.Tick(sec(2), nil)
		a.Tick(sec(600), nil) // idle long past every window: buckets released
		runtime.GC()
		runtime.ReadMemStats(&after)
		perRev = float64(after.HeapAlloc-before.HeapAlloc) / n
		runtime.KeepAlive(a)
	}
	b.ReportMetric(perRev, "bytes/revision")
}

// TestObserveLoad: the tick's one-pass averages are Observe's and Load's.
func TestObserveLoad(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, metric := range []Metric{Concurrency, RPS} {
		for _, alg := range []Algorithm{Linear, WeightedExponential} {
			for _, noData := range []bool{true, false} {
				m := NewMetrics(MetricSpec{Metric: metric, StableWindow: 10 * time.Second, PanicWindow: 2 * time.Second, Algorithm: alg, ReportNoData: noData})
				for s := range 60 {
					if s < 30 && rng.IntN(3) > 0 {
						m.Record(sec(s), Stat{Concurrency: rng.Float64() * 10, Requests: float64(rng.IntN(20))})
					}
					obs, load := m.observeLoad(sec(s))
					if obs != m.Observe(sec(s)) || load != m.Load(sec(s)) {
						t.Fatalf("%v %v %v at %d: %+v %+v, want %+v %+v", metric, alg, noData, s, obs, load, m.Observe(sec(s)), m.Load(sec(s)))
					}
				}
			}
		}
	}
}
