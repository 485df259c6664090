package simulate

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const tinyTrace = `arrival_s,duration_s
0.5,1
0.5,2
3.0,0.5
`

// tinyOptions: one request per replica, target 1 per replica (100 %
// utilization), a 6 s stable window (so a 1 s panic window), no burst
// capacity kept, 1 s cold start.
func tinyOptions(until time.Duration) Options {
	return Options{
		Annotations: map[string]string{
			"autoscaling.knative.dev/window":                        "6s",
			"autoscaling.knative.dev/target-utilization-percentage": "100",
			"autoscaling.knative.dev/target-burst-capacity":         "0",
		},
		ContainerConcurrency: 1,
		ColdStart:            time.Second,
		Until:                until,
	}
}

// TestRunTinyTrace checks every row of a tiny trace against numbers worked
// out by hand:
//
//	0.5  A and B arrive; A starts on r0 (wait 0), B queues (queue 1).
//	     second [0,1): 2 in system for 0.5 s -> concurrency 1.0, rps 2
//	1.5  A leaves, B starts (wait 1.0).
//	     second [1,2): 2 for 0.5 s + 1 for 0.5 s -> 1.5, rps 0
//	t=2  stable = (1.0+1.5)/2 = 1.25, panic (1 s) = 1.5; rps 2/2 = 1, 0.
//	     ceil(1.5/1) = 2 pods on 1 ready: 2/1 >= 200 % -> panic, want 2.
//	     r1 added, ready at 3.
//	3.0  C arrives, starts on r1 (ready at 3: no cold-start wait).
//	     [2,3): 1.0; [3,4): 2 for 0.5 s -> 1.0, rps 1
//	t=4  stable = 4.5/4 = 1.125 -> 2; panic 1.0 -> 1 on 2 ready: below
//	     the threshold but panicking until 2 + 6 s: hold 2.
//	t=6  stable 4.5/6 = 0.75 -> 1; still panicking: 2.
//	t=8  stable = seconds 3..8 = 2/6 = 0.333333; rps 1/6; panic ends only
//	     after 8 (2 + 6 is not before 8): 2.
//	t=10 stable 0; out of panic; scale-down rate 2 on 2 ready: 1.
//	     r0 (idle, oldest) goes.
//	t=12 the decider wants 0; active since 2, longer than the 6 s window:
//	     deactivated, the last replica kept (desired stays 1).
//
// Summary: r0 0..10 s + r1 2..12 s = 20 replica-seconds, 1 cold start,
// waits {0, 0, 1}: p50 0, p95 and p99 1; queue at most 1; no cold waits.
func TestRunTinyTrace(t *testing.T) {
	trace, err := ReadTrace(strings.NewReader(tinyTrace))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(trace, tinyOptions(12*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	want := []Row{
		{T: 2, Ready: 1, StableConcurrency: 1.25, PanicConcurrency: 1.5, StableRPS: 1, PanicRPS: 0, DeciderDesired: 2, Panic: true, Desired: 2},
		{T: 4, Ready: 2, StableConcurrency: 1.125, PanicConcurrency: 1, StableRPS: 0.75, PanicRPS: 1, DeciderDesired: 2, Panic: true, Desired: 2},
		{T: 6, Ready: 2, StableConcurrency: 0.75, PanicConcurrency: 0, StableRPS: 0.5, PanicRPS: 0, DeciderDesired: 2, Panic: true, Desired: 2},
		{T: 8, Ready: 2, StableConcurrency: 0.333333, PanicConcurrency: 0, StableRPS: 0.166667, PanicRPS: 0, DeciderDesired: 2, Panic: true, Desired: 2},
		{T: 10, Ready: 2, DeciderDesired: 1, Panic: false, Desired: 1},
		{T: 12, Ready: 1, DeciderDesired: 0, Panic: false, Desired: 1},
	}
	if len(res.Rows) != len(want) {
		t.Fatalf("%d rows, want %d: %+v", len(res.Rows), len(want), res.Rows)
	}
	for i, w := range want {
		if got := res.Rows[i]; got != w {
			t.Errorf("row %d:\n got %+v\nwant %+v", i, got, w)
		}
	}
	wantSum := Summary{ReplicaSeconds: 20, ColdStarts: 1, WaitP50: 0, WaitP95: 1, WaitP99: 1, MaxQueue: 1, ColdWaits: 0, Requests: 3}
	if res.Summary != wantSum {
		t.Errorf("summary\n got %+v\nwant %+v", res.Summary, wantSum)
	}

	var out bytes.Buffer
	if err := Write(&out, res, CSV); err != nil {
		t.Fatal(err)
	}
	wantOut := `t_s,ready,stable_concurrency,panic_concurrency,stable_rps,panic_rps,decider_desired,panic_mode,desired,excess_burst_capacity
2,1,1.250,1.500,1.000,0.000,2,true,2,0
4,2,1.125,1.000,0.750,1.000,2,true,2,0
6,2,0.750,0.000,0.500,0.000,2,true,2,0
8,2,0.333,0.000,0.167,0.000,2,true,2,0
10,2,0.000,0.000,0.000,0.000,1,false,1,0
12,1,0.000,0.000,0.000,0.000,0,false,1,0

# replica_seconds,20.000
# cold_starts,1
# queue_wait_p50_s,0.000
# queue_wait_p95_s,1.000
# queue_wait_p99_s,1.000
# max_queue_length,1
# cold_start_waits,0
# requests,3
# unserved,0
`
	if out.String() != wantOut {
		t.Errorf("CSV:\n%s\nwant:\n%s", out.String(), wantOut)
	}
}

// TestRunFromZero continues the tiny trace: the revision goes to zero after
// the 30 s grace (inactive and backed by the gateway since 12 s: at 42 s),
// and a request at 50 s waits for the tick at 52 s and a 1 s cold start.
func TestRunFromZero(t *testing.T) {
	trace, err := ReadTrace(strings.NewReader(tinyTrace + "50,1\n"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(trace, tinyOptions(60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Rows {
		wantDesired := map[bool]int{true: 1, false: 0}[r.T < 42 || r.T >= 52]
		if r.T <= 12 {
			continue // as TestRunTinyTrace
		}
		if r.Desired != wantDesired {
			t.Errorf("t=%d: desired %d, want %d (%+v)", r.T, r.Desired, wantDesired, r)
		}
	}
	// r0 0..10, r1 2..42, r2 52..60.
	want := Summary{ReplicaSeconds: 58, ColdStarts: 2, WaitP50: 0, WaitP95: 3, WaitP99: 3, MaxQueue: 1, ColdWaits: 1, Requests: 4}
	if res.Summary != want {
		t.Errorf("summary\n got %+v\nwant %+v", res.Summary, want)
	}
}

func TestRunLimits(t *testing.T) {
	// 20 requests at once, 10 s each, containerConcurrency 2, max-scale 2:
	// 4 run at a time, the rest wait; by 30 s only 12 have started.
	var b strings.Builder
	b.WriteString("arrival_s,duration_s\n")
	for range 20 {
		b.WriteString("0,10\n")
	}
	trace, err := ReadTrace(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	o := Options{
		Annotations:          map[string]string{"autoscaling.knative.dev/max-scale": "2"},
		ContainerConcurrency: 2, Until: 30 * time.Second,
	}
	res, err := Run(trace, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Rows {
		if r.Desired > 2 || r.Ready > 2 {
			t.Fatalf("above max-scale: %+v", r)
		}
	}
	s := res.Summary
	if s.Requests != 20 || s.Unserved != 8 || s.MaxQueue != 18 || s.WaitP99 != 30 {
		t.Errorf("summary %+v", s)
	}
	// Unlimited concurrency: one replica takes everything at once.
	o.ContainerConcurrency = 0
	if res, err = Run(trace, o); err != nil || res.Summary.WaitP99 != 0 || res.Summary.MaxQueue != 0 {
		t.Errorf("containerConcurrency 0: %+v %v", res.Summary, err)
	}
}

func TestReadTraceErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"empty", "", "empty"},
		{"wrong header", "t,d\n1,2\n", "header"},
		{"not a number", "arrival_s,duration_s\n1,x\n", "line 2: duration_s"},
		{"negative", "arrival_s,duration_s\n-1,1\n", "line 2: arrival_s"},
		{"three fields", "arrival_s,duration_s\n1,2,3\n", "wrong number of fields"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadTrace(strings.NewReader(tc.in))
			if !errors.Is(err, ErrTrace) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want ErrTrace mentioning %q", err, tc.want)
			}
		})
	}
	got, err := ReadTrace(strings.NewReader("arrival_s,duration_s\n# a comment\n2,1\n1, 0.5\n1,3\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []Request{{1, 0.5}, {1, 3}, {2, 1}}; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("sorted trace %v, want %v", got, want)
	}
}

func TestRunErrors(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"hpa", Options{Annotations: map[string]string{"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev", "autoscaling.knative.dev/metric": "cpu"}}, "only the KPA"},
		{"bad annotation", Options{Annotations: map[string]string{"autoscaling.knative.dev/window": "1s"}}, "window"},
		{"bad config", Options{Config: map[string]string{"max-scale-up-rate": "0"}}, "max-scale-up-rate"},
	}
	for _, tc := range tests {
		if _, err := Run(nil, tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
}

func TestSweep(t *testing.T) {
	trace, err := ReadTrace(strings.NewReader(tinyTrace + "50,1\n"))
	if err != nil {
		t.Fatal(err)
	}
	var sweeps []Sweep
	for _, arg := range []string{"min-scale=0,1", "cold-start=1s,5s"} {
		sw, err := ParseSweep(arg)
		if err != nil {
			t.Fatal(err)
		}
		sweeps = append(sweeps, sw)
	}
	res, err := RunSweep(trace, tinyOptions(60*time.Second), sweeps, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// min-scale 1 never goes to zero: the request at 50 s does not wait, and
	// both cold starts meet the 2 s budget, the cheaper first. min-scale 0
	// goes to zero and the request at 50 s waits for the tick at 52 s and the
	// cold start: 3 s, then 7 s.
	want := []struct {
		min, cold string
		meets     bool
		p99       float64
	}{{"1", "", true, 1}, {"1", "", true, 1}, {"0", "1s", false, 3}, {"0", "5s", false, 7}}
	if len(res) != len(want) {
		t.Fatalf("%d results", len(res))
	}
	for i, w := range want {
		r := res[i]
		if r.Settings[0] != [2]string{"min-scale", w.min} || (w.cold != "" && r.Settings[1][1] != w.cold) ||
			r.MeetsBudget != w.meets || r.Summary.WaitP99 != w.p99 {
			t.Errorf("result %d: %+v, want %+v", i, r, w)
		}
	}
	if res[0].Summary.ReplicaSeconds > res[1].Summary.ReplicaSeconds {
		t.Errorf("not cheapest first: %+v, %+v", res[0], res[1])
	}
	var out bytes.Buffer
	if err := WriteSweep(&out, res, Table); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(strings.TrimLeft(out.String(), " "), "min-scale") || strings.Count(out.String(), "\n") != 5 {
		t.Errorf("table:\n%s", out.String())
	}
}

func TestParseSweep(t *testing.T) {
	tests := []struct {
		arg, key string
		n        int
		err      string
	}{
		{"target=10,20,40", "target", 3, ""},
		{"window=30s, 60s", "window", 2, ""},
		{"autoscaling.knative.dev/target=5", "autoscaling.knative.dev/target", 1, ""},
		{"stable-window=30s", "stable-window", 1, ""},
		{"config-autoscaler/target-burst-capacity=0,-1", "config-autoscaler/target-burst-capacity", 2, ""},
		{"container-concurrency=1,4", "container-concurrency", 2, ""},
		{"target", "", 0, "want key=value"},
		{"target=", "", 0, "want key=value"},
		{"target=1,,2", "", 0, "empty value"},
		{"bogus=1", "", 0, "unknown setting"},
		{"cold-start=fast", "", 0, "cold-start"},
	}
	for _, tc := range tests {
		sw, err := ParseSweep(tc.arg)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err = %v, want %q", tc.arg, err, tc.err)
			}
			continue
		}
		if err != nil || sw.Key != tc.key || len(sw.Values) != tc.n {
			t.Errorf("%q: %+v %v", tc.arg, sw, err)
		}
	}
	o, _ := Set(Options{}, "config-autoscaler/target-burst-capacity", "0")
	if o.Config["target-burst-capacity"] != "0" || len(o.Annotations) != 0 {
		t.Errorf("config key: %+v", o)
	}
	o, _ = Set(Options{}, "target-burst-capacity", "0")
	if o.Annotations["autoscaling.knative.dev/target-burst-capacity"] != "0" {
		t.Errorf("annotation key: %+v", o)
	}
}

func TestPercentile(t *testing.T) {
	v := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct{ p, want float64 }{{50, 5}, {95, 10}, {99, 10}, {10, 1}} {
		if got := percentile(v, tc.p); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
	if percentile(nil, 99) != 0 || math.IsNaN(percentile([]float64{2}, 50)) {
		t.Error("edge cases")
	}
}

// TestRunInvariants replays random traces under random settings and checks
// what must hold whatever the autoscaler does: the per-second concurrency
// integrates to the time requests spent in the system (Little's law over the
// run), the per-second arrivals add up to the trace, service is first come
// first served and never before arrival, and the summary counts agree.
func TestRunInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	var withUnserved, withColdWaits, withScaleDown int
	for run := range 60 {
		n := rng.IntN(300)
		trace := make([]Request, n)
		span := 1 + rng.Float64()*200
		for i := range trace {
			// Some arrivals on whole seconds, some durations 0.
			a := rng.Float64() * span
			if rng.IntN(5) == 0 {
				a = math.Floor(a)
			}
			d := rng.ExpFloat64() * 3
			if rng.IntN(10) == 0 {
				d = 0
			}
			trace[i] = Request{Arrival: a, Duration: d}
		}
		slices.SortStableFunc(trace, func(a, b Request) int { return cmp.Compare(a.Arrival, b.Arrival) })
		o := Options{
			Annotations: map[string]string{
				"autoscaling.knative.dev/window":    []string{"6s", "20s", "60s"}[rng.IntN(3)],
				"autoscaling.knative.dev/max-scale": strconv.Itoa(rng.IntN(6)),
				"autoscaling.knative.dev/min-scale": strconv.Itoa(rng.IntN(2)),
			},
			Config:               map[string]string{"scale-to-zero-grace-period": "6s"},
			ContainerConcurrency: rng.IntN(4),
			ColdStart:            time.Duration(rng.IntN(8000)) * time.Millisecond,
			Until:                time.Duration(rng.IntN(400)) * time.Second,
		}
		if o.Annotations["autoscaling.knative.dev/max-scale"] == "0" {
			delete(o.Annotations, "autoscaling.knative.dev/max-scale")
		}
		s, err := newSim(trace, o)
		if err != nil {
			t.Fatal(err)
		}
		s.run()
		where := fmt.Sprintf("run %d (%d requests, %+v)", run, n, o)

		var concSum, arrivals float64
		for _, st := range s.stats {
			concSum += st.Concurrency
			arrivals += st.Requests
		}
		if len(s.stats) != int(s.until) {
			t.Fatalf("%s: %d seconds measured, want %v", where, len(s.stats), s.until)
		}
		inSystem, counted, unserved := 0., 0, 0
		lastStart := math.Inf(-1)
		for i, r := range trace {
			if r.Arrival >= s.until {
				if !math.IsNaN(s.started[i]) {
					t.Fatalf("%s: request %d arrived after the end and started", where, i)
				}
				continue
			}
			counted++
			leave := s.until
			if st := s.started[i]; !math.IsNaN(st) {
				if st < r.Arrival || st < lastStart {
					t.Fatalf("%s: request %d (arrival %v) started at %v, after one started at %v", where, i, r.Arrival, st, lastStart)
				}
				lastStart = st
				leave = min(st+r.Duration, s.until)
			} else {
				unserved++
				lastStart = math.Inf(1) // nobody after it may start
			}
			inSystem += leave - r.Arrival
		}
		if math.Abs(concSum-inSystem) > 1e-6*(1+inSystem) {
			t.Fatalf("%s: concurrency integrates to %v, requests spent %v in the system", where, concSum, inSystem)
		}
		if int(arrivals) != counted {
			t.Fatalf("%s: %v arrivals measured, %d in the trace", where, arrivals, counted)
		}
		sum := s.summary()
		if sum.Requests != counted || sum.Unserved != unserved {
			t.Fatalf("%s: summary %+v, want %d requests, %d unserved", where, sum, counted, unserved)
		}
		if unserved > 0 {
			withUnserved++
		}
		if sum.ColdWaits > 0 {
			withColdWaits++
		}
		maxS, _ := strconv.Atoi(o.Annotations["autoscaling.knative.dev/max-scale"])
		for i, r := range s.rows {
			if i > 0 && r.Desired < s.rows[i-1].Desired {
				withScaleDown++
			}
			if maxS > 0 && (r.Desired > maxS || r.Ready > maxS) {
				t.Fatalf("%s: above max-scale: %+v", where, r)
			}
		}
	}
	if withUnserved == 0 || withColdWaits == 0 || withScaleDown == 0 {
		t.Errorf("the random runs missed a case: %d with unserved requests, %d with cold-start waits, %d scale-downs",
			withUnserved, withColdWaits, withScaleDown)
	}
}
