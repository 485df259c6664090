package autoscaler

// The differential tests of Poke: Knative v0.50.0's own MultiScaler for the
// rule (which stat makes it tick at once), and Knative's MetricCollector and
// scaling.autoscaler, fed as cmd/autoscaler feeds them, for what a poke
// decides and for every tick after it.

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kmetrics "knative.dev/serving/pkg/autoscaler/metrics"
	"knative.dev/serving/pkg/autoscaler/scaling"
	kparesources "knative.dev/serving/pkg/reconciler/autoscaling/kpa/resources"
	aresources "knative.dev/serving/pkg/reconciler/autoscaling/resources"

	"github.com/infera-dev/infera/internal/workload"
)

// gatedScaler is a UniScaler whose Scale reports each call on entered and
// returns (an invalid result, so the decider's status stays) only once
// release is closed: while one call is held, Knative's scaler runner
// cannot receive a poke.
type gatedScaler struct {
	entered chan struct{}
	release chan struct{}
}

func (g *gatedScaler) Scale(*zap.SugaredLogger, time.Time) scaling.ScaleResult {
	g.entered <- struct{}{}
	<-g.release
	return scaling.ScaleResult{}
}
func (g *gatedScaler) Update(*scaling.DeciderSpec) {}
func (g *gatedScaler) OnDelete()                   {}

// TestPokeRuleIsKnatives runs Knative's MultiScaler.Poke on each standing
// recommendation and stat and checks that it ticks at once exactly where
// DeciderStatus.NeedsPoke says so: a standing 0 and a stat with load.
// Knative's poke channel is unbuffered, so a Poke that returns while the
// runner is held inside a tick is one that did not poke; the first poke
// (standing 0, load) is seen arriving as a tick well inside the runner's
// first 2 s ticker period. Autoscaler.Poke also decides at a standing -1:
// that is its one difference, and this test shows Knative does not.
func TestPokeRuleIsKnatives(t *testing.T) {
	ctx := context.Background()
	for attempt := 0; ; attempt++ {
		g := &gatedScaler{entered: make(chan struct{}, 4), release: make(chan struct{})}
		stop := make(chan struct{})
		ms := scaling.NewMultiScaler(stop, func(*scaling.Decider) (scaling.UniScaler, error) { return g, nil }, zap.NewNop().Sugar())
		decider := func(desired int32) *scaling.Decider {
			return &scaling.Decider{
				ObjectMeta: metav1.ObjectMeta{Namespace: testKey.Namespace, Name: testKey.Name},
				Spec:       scaling.DeciderSpec{TargetValue: 1, TotalValue: 1, MaxScaleUpRate: 10, MaxScaleDownRate: 2, PanicThreshold: 2},
				Status:     scaling.DeciderStatus{DesiredScale: desired},
			}
		}
		created := time.Now()
		d, err := ms.Create(ctx, decider(0))
		if err != nil {
			t.Fatal(err)
		}
		if d.Status.DesiredScale != -1 {
			t.Fatalf("a new Knative decider stands at %d, want -1", d.Status.DesiredScale)
		}
		set := func(desired int32) {
			if _, err := ms.Update(ctx, decider(desired)); err != nil {
				t.Fatal(err)
			}
		}
		poke := func(c float64) { ms.Poke(testKey, kmetrics.Stat{AverageConcurrentRequests: c, RequestCount: c}) }

		// Standing 0, one request: Knative ticks at once.
		set(0)
		poke(1)
		<-g.entered
		if time.Since(created) >= time.Second {
			// Too slow to tell the poke's tick from the ticker's: try again.
			close(g.release)
			close(stop)
			if attempt < 3 {
				continue
			}
			t.Fatal("the machine is too slow for this test")
		}
		if !(DeciderStatus{DesiredScale: 0}).NeedsPoke(Stat{Concurrency: 1}) {
			t.Error("NeedsPoke(standing 0, load) = false; Knative ticked")
		}
		// The runner is held in that tick: every other case must return.
		for _, c := range []struct {
			desired int32
			conc    float64
		}{{-1, 1}, {-1, 0}, {0, 0}, {1, 1}, {3, 2}} {
			set(c.desired)
			returned := make(chan struct{})
			go func() { poke(c.conc); close(returned) }()
			select {
			case <-returned:
			case <-time.After(10 * time.Second):
				t.Fatalf("Knative poked at standing %d, concurrency %v", c.desired, c.conc)
			}
			if (DeciderStatus{DesiredScale: c.desired}).NeedsPoke(Stat{Concurrency: c.conc}) {
				t.Errorf("NeedsPoke(standing %d, concurrency %v) = true; Knative does not tick", c.desired, c.conc)
			}
			wantOurs := c.desired == -1 && c.conc != 0
			if got := pokeDecides(DeciderStatus{DesiredScale: c.desired}, Stat{Concurrency: c.conc}); got != wantOurs {
				t.Errorf("pokeDecides(standing %d, concurrency %v) = %v, want %v", c.desired, c.conc, got, wantOurs)
			}
		}
		close(g.release)
		close(stop)
		return
	}
}

// pokeVariant is one kind of revision that gets requests while it has no
// ready replica.
type pokeVariant struct {
	name    string
	cluster map[string]string
	anns    map[string]string
	// first is the second of the first request (its arrival is a random
	// point inside it).
	first func(rng *rand.Rand) int
}

// pokeCoverage counts what the compared pokes and ticks went through.
type pokeCoverage struct {
	ticks, pokes, noData, atZero, notDecided, panicking int
}

func (c pokeCoverage) String() string {
	return fmt.Sprintf("%d ticks and %d pokes compared: %d pokes decided without data (Knative would wait for its tick), "+
		"%d at a standing 0 (Knative's own poke), %d decided nothing; %d ticks in panic mode",
		c.ticks, c.pokes, c.noData, c.atZero, c.notDecided, c.panicking)
}

// run drives one revision through cold starts: our Autoscaler against
// Knative's collector and decider, fed as Knative's autoscaler is: the
// activator's first-request stat recorded as it arrives, its next report
// less that request, ticks every 2 s on a standing recommendation kept as
// MultiScaler keeps it. At a standing 0 Knative pokes and so do we; at a
// standing -1 we poke where Knative waits for its tick, and Knative's side
// ticks at the same instant, so both go on from the same state (a tick at
// the arrival is one Knative's ticker could have had). Ready replicas follow
// the decisions with some lag and now and then one fails.
func (v pokeVariant) run(t *testing.T, rng *rand.Rand, seconds int, cov *pokeCoverage) {
	t.Helper()
	cc, err := ParseClusterConfig(v.cluster)
	if err != nil {
		t.Fatal(err)
	}
	rev := RevisionParams{Annotations: v.anns, Reachable: true}
	cfg, err := NewConfig(cc, rev)
	if err != nil {
		t.Fatal(err)
	}
	pa := knativePA(cc, rev)
	kd := kparesources.MakeDecider(pa, cc).Spec
	scrape := "model-00001-private"
	if kd.TargetBurstCapacity == -1 {
		scrape = "" // Knative's resolveScrapeTarget: the activator reports everything
	}
	k, _, _ := newKnative(t, cfg.Metrics, cfg.Decider, 0, &kd, aresources.MakeMetric(pa, scrape, cc))
	// The standing recommendation of a Decider Knative's MultiScaler has just made.
	kst := DeciderStatus{DesiredScale: -1}
	switch tbc := kd.TargetBurstCapacity; tbc {
	case -1, 0:
		kst.ExcessBurstCapacity = int32(tbc)
	default:
		kst.ExcessBurstCapacity = int32(float64(kd.InitialScale)*kd.TotalValue - tbc)
	}
	ktick := func(now time.Time, ready int) {
		k.pods.ready = ready
		if r := k.scale(t, now); r.ScaleValid {
			kst.DesiredScale, kst.ExcessBurstCapacity = r.DesiredPodCount, r.ExcessBurstCapacity
		}
	}

	const id = workload.RevisionID("default/model-00001")
	a := New(cc)
	start := sec(0)
	if err := a.Upsert(start, id, v.anns, 0); err != nil {
		t.Fatal(err)
	}
	compare := func(what string, now time.Time, d Decision) {
		t.Helper()
		if d.DeciderDesired != int(kst.DesiredScale) || d.ExcessBurstCapacity != float64(kst.ExcessBurstCapacity) || d.Panic != k.panic {
			t.Fatalf("%s: %s at +%v:\n ours    desired %d ebc %v panic %v\n knative desired %d ebc %d panic %v",
				v.name, what, now.Sub(start), d.DeciderDesired, d.ExcessBurstCapacity, d.Panic,
				kst.DesiredScale, kst.ExcessBurstCapacity, k.panic)
		}
	}
	d, _ := a.Decision(id)
	compare("created", start, d)

	ready, desired := 0, d.Desired
	demanded := false // the gateway has poked in this cold episode
	adj := 0.         // the activator's first-request stat, left out of its next report
	first := v.first(rng)
	level, busyUntil, idleUntil := 0., 0, first
	for s := range seconds {
		base := start.Add(time.Duration(s) * time.Second)
		// Load: busy spells of random length and level, idle gaps between.
		if s >= idleUntil && s >= busyUntil {
			level = 0.2 + rng.Float64()*3
			if rng.IntN(4) == 0 {
				level = 20 + rng.Float64()*400
			}
			busyUntil = s + 1 + rng.IntN(90)
			idleUntil = busyUntil + 5 + rng.IntN(240)
		}
		c := 0.
		if s < busyUntil && s >= first {
			c = math.Max(0.05, level*(0.8+rng.Float64()*0.4))
		}
		if ready > 0 {
			demanded = false
		}
		if c > 0 && ready == 0 && !demanded {
			// The first request that finds no ready replica: the gateway pokes.
			demanded = true
			at := base.Add(time.Duration(rng.IntN(1000)) * time.Millisecond)
			standing := kst.DesiredScale
			k.record(at, Stat{Concurrency: 1, Requests: 1})
			adj = 1
			got, decided := a.Poke(at, workload.Stat{Revision: id, Time: at, Concurrency: 1, Requests: 1}, ready)
			knativePokes := standing == 0 // MultiScaler.Poke: the stat carries load
			if decided != (knativePokes || standing == -1) {
				t.Fatalf("%s: poke at +%v, standing %d: decided %v", v.name, at.Sub(start), standing, decided)
			}
			cov.pokes++
			switch {
			case !decided:
				cov.notDecided++
			case knativePokes:
				cov.atZero++
			default:
				cov.noData++
			}
			if decided {
				ktick(at, ready)
				desired = got.Desired
				if desired < 1 {
					t.Fatalf("%s: poke at +%v decided %+v: no replica for the request", v.name, at.Sub(start), got)
				}
			}
			compare(fmt.Sprintf("poke (standing %d)", standing), at, got)
		}
		// The gateway's stat for the second (zeros while replicas run), at
		// its end; Knative's activator leaves out the request it reported.
		end := base.Add(time.Second)
		if c > 0 || ready > 0 || desired > 0 {
			reqs := 0.
			if c > 0 {
				reqs = math.Max(1, math.Round(c*3))
			}
			a.Record(workload.Stat{Revision: id, Time: end, Concurrency: c, Requests: reqs})
			k.record(end, Stat{Concurrency: math.Max(c-adj, 0), Requests: reqs - adj})
			adj = 0
		}
		if s%2 == 1 {
			got := a.Tick(end, map[workload.RevisionID]int{id: ready})[id]
			ktick(end, ready)
			cov.ticks++
			if got.Panic {
				cov.panicking++
			}
			compare("tick", end, got)
			desired = got.Desired
		}
		// Replicas follow with some lag; now and then one fails.
		switch {
		case ready < desired && rng.IntN(3) > 0:
			ready += 1 + rng.IntN(desired-ready)
		case ready > desired:
			ready -= 1 + rng.IntN(ready-desired)
		}
		if ready > 0 && rng.IntN(100) == 0 {
			ready--
		}
	}
}

// TestPokeDecidesAsKnative compares pokes and the ticks around them with
// Knative, on revisions with no data when their first request comes (an
// initial-scale 0 revision that never had traffic, and right after a
// restart, at initial scale 0 and 1) and then back from zero, over the
// annotations that change what a first request decides.
func TestPokeDecidesAsKnative(t *testing.T) {
	t.Parallel()
	seconds, seeds := 1500, 3
	if testing.Short() {
		seconds, seeds = 600, 1
	}
	zero := map[string]string{"allow-zero-initial-scale": "true", "scale-to-zero-grace-period": "10s"}
	initialZero := map[string]string{"autoscaling.knative.dev/initial-scale": "0"}
	never := func(rng *rand.Rand) int { return 30 + rng.IntN(seconds/2) }
	restart := func(rng *rand.Rand) int { return rng.IntN(2) } // before the first tick
	paths := []pokeVariant{
		{name: "initial-scale 0, never had traffic", cluster: zero, anns: initialZero, first: never},
		{name: "initial-scale 0 (config-autoscaler), never had traffic", cluster: map[string]string{
			"allow-zero-initial-scale": "true", "initial-scale": "0"}, first: never},
		{name: "initial-scale 0, right after a restart", cluster: zero, anns: initialZero, first: restart},
		{name: "initial-scale 1, right after a restart", first: restart},
	}
	extras := []struct {
		name string
		anns map[string]string
	}{
		{"defaults", nil},
		{"window 6s", map[string]string{"autoscaling.knative.dev/window": "6s"}},
		{"target 10", map[string]string{"autoscaling.knative.dev/target": "10"}},
		{"activation-scale 3", map[string]string{"autoscaling.knative.dev/activation-scale": "3"}},
		{"target-burst-capacity -1", map[string]string{"autoscaling.knative.dev/target-burst-capacity": "-1"}},
		{"target-burst-capacity 0", map[string]string{"autoscaling.knative.dev/target-burst-capacity": "0"}},
		{"metric rps", map[string]string{"autoscaling.knative.dev/metric": "rps", "autoscaling.knative.dev/target": "2"}},
		{"weighted-exponential, scale-down-delay 10s", map[string]string{
			"autoscaling.knative.dev/metric-aggregation-algorithm": "weighted-exponential",
			"autoscaling.knative.dev/scale-down-delay":             "10s"}},
	}
	rng := rand.New(rand.NewPCG(13, 14))
	var cov pokeCoverage
	for _, p := range paths {
		for _, x := range extras {
			v := p
			v.name = p.name + "/" + x.name
			v.anns = map[string]string{}
			for k, val := range p.anns {
				v.anns[k] = val
			}
			for k, val := range x.anns {
				v.anns[k] = val
			}
			for range seeds {
				v.run(t, rng, seconds, &cov)
			}
		}
	}
	t.Log(cov)
	if cov.noData == 0 || cov.atZero == 0 || cov.notDecided == 0 || cov.panicking == 0 {
		t.Errorf("the runs missed a kind of poke: %v", cov)
	}
}
