// Package simulate replays a request trace through infera's KPA (the same
// autoscaler.Autoscaler that infera up runs) with a modelled revision, for
// what-if tuning of autoscaling settings before deploying. It is pure: no
// clock, no goroutines, no I/O beyond the readers and writers it is given.
//
// # Usage
//
//	infera simulate -f service.yaml [-f config-autoscaler.yaml] --trace trace.csv \
//	    [--cold-start 5s] [--until 10m] [-o csv|table]
//	infera simulate -f service.yaml --trace trace.csv \
//	    --sweep target=10,20,40 --sweep window=30s,60s --p99-budget 2s
//
// examples/simulate holds a service and a trace to start from.
//
// # The model
//
//   - The trace is CSV with the header arrival_s,duration_s and one request a
//     row (seconds, floats). Requests are served first come, first served
//     when a replica slot is free (slots = ready replicas x
//     containerConcurrency; unlimited per ready replica when it is 0) and
//     hold the slot for duration_s. A request goes to the ready replica with
//     the fewest requests in flight.
//   - The observed concurrency of second [k, k+1) is the time-weighted
//     average number of requests in the system, waiting or served,
//     revision-wide; its rps is the number of arrivals in it. Each second is
//     recorded as the gateway's Stat at its end, k+1.
//   - Ticks at t = 2, 4, 6 ... s decide with the stats of the seconds before t
//     and the replicas ready at t. The revision starts with its initial scale
//     ready at t = 0. Replicas added at tick t are ready at t + cold start;
//     replicas removed at t stop taking requests at t (starting ones go first,
//     then the ready ones with the fewest requests in flight) and finish the
//     ones they hold. At one instant: departures, replicas becoming ready,
//     the end of a second, the tick, arrivals, then dispatch.
//   - The simulation stops at --until (default: 10 minutes after the last
//     arrival); requests not started by then count with the wait they had so
//     far and are reported as unserved. Unlike infera up, no decision is made
//     between ticks (infera up also decides at once when a request arrives
//     for a revision at zero), so a cold start from zero waits for the next
//     tick here.
//
// # Output
//
// One row per tick: t_s, ready, stable_concurrency, panic_concurrency,
// stable_rps, panic_rps, decider_desired (the decider's standing
// recommendation, -1 before it has one), panic_mode, desired (after
// min/max/initial scale and the scale-to-zero rules) and
// excess_burst_capacity; then the summary: replica-seconds (replicas from
// being added until removed and drained), cold starts (replicas added),
// queue wait p50/p95/p99 (nearest rank), the longest queue, and the requests
// that waited for a cold start (served by a replica that was not yet ready
// when they arrived).
//
// With sweeps, every combination of the swept values runs, and one summary
// row each is printed, the cheapest (fewest replica-seconds) configuration
// whose p99 wait meets the budget first.
package simulate

import (
	"container/heap"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/infera-dev/infera/internal/autoscaler"
	"github.com/infera-dev/infera/internal/workload"
)

// ErrTrace: the trace is not CSV arrival_s,duration_s with valid numbers.
var ErrTrace = errors.New("simulate: bad trace")

// TraceHeader is the trace's required header.
const TraceHeader = "arrival_s,duration_s"

// DefaultTail is how long the simulation runs after the last arrival when
// Options.Until is 0.
const DefaultTail = 10 * time.Minute

// Request is one row of a trace, in seconds.
type Request struct {
	Arrival, Duration float64
}

// ReadTrace reads a trace: the header arrival_s,duration_s, then one
// request a row. Rows come back sorted by arrival (stable: the trace order
// breaks ties, which is the FIFO order).
func ReadTrace(r io.Reader) ([]Request, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = 2
	cr.TrimLeadingSpace = true
	cr.Comment = '#'
	header, err := cr.Read()
	if err == io.EOF {
		return nil, fmt.Errorf("%w: empty, want the header %s", ErrTrace, TraceHeader)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrTrace, err)
	}
	if strings.Join(header, ",") != TraceHeader {
		return nil, fmt.Errorf("%w: header %q, want %s", ErrTrace, strings.Join(header, ","), TraceHeader)
	}
	var out []Request
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrTrace, err)
		}
		line, _ := cr.FieldPos(0)
		var v [2]float64
		for i, name := range []string{"arrival_s", "duration_s"} {
			f, err := strconv.ParseFloat(strings.TrimSpace(rec[i]), 64)
			if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
				return nil, fmt.Errorf("%w: line %d: %s %q: want a number >= 0", ErrTrace, line, name, rec[i])
			}
			v[i] = f
		}
		out = append(out, Request{Arrival: v[0], Duration: v[1]})
	}
	slices.SortStableFunc(out, func(a, b Request) int {
		switch {
		case a.Arrival < b.Arrival:
			return -1
		case a.Arrival > b.Arrival:
			return 1
		}
		return 0
	})
	return out, nil
}

// Options is the modelled revision and the run.
type Options struct {
	// Annotations are the revision template's annotations.
	Annotations map[string]string
	// ContainerConcurrency is spec.containerConcurrency (0: unlimited).
	ContainerConcurrency int
	// Config is config-autoscaler's data (nil: Knative's defaults).
	Config map[string]string
	// ColdStart is how long an added replica takes to become ready.
	ColdStart time.Duration
	// Until ends the simulation; 0 is DefaultTail after the last arrival.
	// It is rounded up to a whole second.
	Until time.Duration
}

// Row is one tick.
type Row struct {
	T                                   int // seconds
	Ready                               int
	StableConcurrency, PanicConcurrency float64
	StableRPS, PanicRPS                 float64
	DeciderDesired                      int
	Panic                               bool
	Desired                             int
	ExcessBurstCapacity                 float64
}

// Summary is a run's outcome.
type Summary struct {
	// ReplicaSeconds: replicas from being added (or t = 0) until removed
	// and drained, integrated over the run.
	ReplicaSeconds float64
	// ColdStarts: replicas added by the autoscaler.
	ColdStarts int
	// WaitP50, WaitP95, WaitP99: queue waits (start - arrival) in seconds,
	// nearest rank, over every request that arrived before the end.
	WaitP50, WaitP95, WaitP99 float64
	// MaxQueue is the most requests waiting at once.
	MaxQueue int
	// ColdWaits: requests served by a replica that was not ready when they
	// arrived.
	ColdWaits int
	// Requests that arrived before the end; Unserved of them never started.
	Requests, Unserved int
}

// Result is the ticks and the summary of one run.
type Result struct {
	Rows    []Row
	Summary Summary
}

// revisionID is the simulated revision's name in the autoscaler.
const revisionID = workload.RevisionID("simulate/revision")

// base is the simulation's t = 0 on the autoscaler's clock: a whole, even
// second, so that seconds and two-second ticks fall on bucket boundaries.
var base = time.Unix(1_000_000_000, 0)

func at(t float64) time.Time { return base.Add(time.Duration(math.Round(t * 1e9))) }

// replica is one modelled replica.
type replica struct {
	readyAt  float64
	inflight int
	ready    bool
	removed  bool // takes no new requests
	gone     bool // removed and drained
	order    int  // creation order, for deterministic choices
}

// departure is a request leaving its replica.
type departure struct {
	t   float64
	rep *replica
}

type departures []departure

func (d departures) Len() int           { return len(d) }
func (d departures) Less(i, j int) bool { return d[i].t < d[j].t }
func (d departures) Swap(i, j int)      { d[i], d[j] = d[j], d[i] }
func (d *departures) Push(x any)        { *d = append(*d, x.(departure)) }
func (d *departures) Pop() any {
	old := *d
	x := old[len(old)-1]
	*d = old[:len(old)-1]
	return x
}

// Run replays trace (sorted by arrival, as ReadTrace returns it) through the
// autoscaler with the revision and settings of o.
func Run(trace []Request, o Options) (Result, error) {
	s, err := newSim(trace, o)
	if err != nil {
		return Result{}, err
	}
	s.run()
	return Result{Rows: s.rows, Summary: s.summary()}, nil
}

func newSim(trace []Request, o Options) (*sim, error) {
	cc, err := autoscaler.ParseClusterConfig(o.Config)
	if err != nil {
		return nil, fmt.Errorf("simulate: %w", err)
	}
	if o.ContainerConcurrency < 0 {
		return nil, fmt.Errorf("simulate: containerConcurrency %d: must be >= 0", o.ContainerConcurrency)
	}
	if o.ColdStart < 0 {
		return nil, fmt.Errorf("simulate: cold start %v: must be >= 0", o.ColdStart)
	}
	a := autoscaler.New(cc)
	if err := a.Upsert(base, revisionID, o.Annotations, o.ContainerConcurrency); err != nil {
		return nil, fmt.Errorf("simulate: %w", err)
	}
	until := o.Until.Seconds()
	if o.Until == 0 {
		last := 0.
		if len(trace) > 0 {
			last = trace[len(trace)-1].Arrival
		}
		until = last + DefaultTail.Seconds()
	}
	until = math.Ceil(until)
	initial, _ := a.Decision(revisionID)

	s := &sim{
		a: a, cc: o.ContainerConcurrency, coldStart: o.ColdStart.Seconds(), trace: trace, until: until,
		waits: make([]float64, 0, len(trace)), started: make([]float64, len(trace)),
	}
	for i := range s.started {
		s.started[i] = math.NaN()
	}
	for range initial.Desired {
		s.add(0, true)
	}
	return s, nil
}

type sim struct {
	a         *autoscaler.Autoscaler
	cc        int
	coldStart float64
	trace     []Request
	until     float64

	now      float64
	next     int   // next arrival
	queue    []int // waiting requests, by trace index
	inSystem int
	replicas []*replica
	existing int // replicas not gone
	deps     departures

	second   float64 // the second being measured starts here
	concInt  float64 // integral of inSystem over the current second
	arrivals int     // arrivals in the current second

	rows       []Row
	created    int       // replicas made so far
	waits      []float64 // queue wait of each request started (then of those never started)
	started    []float64 // start time by trace index; NaN if never started
	stats      []workload.Stat
	replicaSec float64
	coldStarts int
	coldWaits  int
	maxQueue   int
}

func (s *sim) run() {
	nextTick := 2.
	for {
		t := min(s.second+1, nextTick, s.until)
		if s.next < len(s.trace) && s.trace[s.next].Arrival < s.until {
			t = min(t, s.trace[s.next].Arrival)
		}
		if len(s.deps) > 0 {
			t = min(t, s.deps[0].t)
		}
		for _, r := range s.replicas {
			if !r.ready && !r.removed {
				t = min(t, r.readyAt)
			}
		}
		dt := t - s.now
		s.concInt += float64(s.inSystem) * dt
		s.replicaSec += float64(s.existing) * dt
		s.now = t

		// Departures.
		for len(s.deps) > 0 && s.deps[0].t <= t {
			d := heap.Pop(&s.deps).(departure)
			d.rep.inflight--
			s.inSystem--
			if d.rep.removed && d.rep.inflight == 0 {
				d.rep.gone = true
				s.existing--
			}
		}
		// Replicas becoming ready.
		for _, r := range s.replicas {
			if !r.ready && !r.removed && r.readyAt <= t {
				r.ready = true
			}
		}
		// The end of a second: the gateway's stat.
		if s.second+1 <= t {
			st := workload.Stat{Revision: revisionID, Time: at(s.second + 1), Concurrency: s.concInt, Requests: float64(s.arrivals)}
			s.a.Record(st)
			s.stats = append(s.stats, st)
			s.second++
			s.concInt, s.arrivals = 0, 0
		}
		// The tick.
		if nextTick <= t {
			s.tick(int(nextTick))
			nextTick += 2
		}
		if t >= s.until {
			break
		}
		// Arrivals.
		for s.next < len(s.trace) && s.trace[s.next].Arrival <= t {
			s.queue = append(s.queue, s.next)
			s.inSystem++
			s.arrivals++
			s.next++
		}
		s.dispatch()
		s.maxQueue = max(s.maxQueue, len(s.queue))
	}
	// Requests still waiting at the end count with the wait they had.
	for _, i := range s.queue {
		s.waits = append(s.waits, s.until-s.trace[i].Arrival)
	}
}

func (s *sim) tick(t int) {
	ready := 0
	for _, r := range s.replicas {
		if r.ready && !r.removed {
			ready++
		}
	}
	d := s.a.Tick(at(float64(t)), map[workload.RevisionID]int{revisionID: ready})[revisionID]
	s.rows = append(s.rows, Row{
		T: t, Ready: ready,
		StableConcurrency: d.StableConcurrency, PanicConcurrency: d.PanicConcurrency,
		StableRPS: d.StableRPS, PanicRPS: d.PanicRPS,
		DeciderDesired: d.DeciderDesired, Panic: d.Panic, Desired: d.Desired,
		ExcessBurstCapacity: d.ExcessBurstCapacity,
	})
	var live []*replica
	for _, r := range s.replicas {
		if !r.removed {
			live = append(live, r)
		}
	}
	switch {
	case d.Desired > len(live):
		for range d.Desired - len(live) {
			s.add(float64(t)+s.coldStart, false)
			s.coldStarts++
		}
	case d.Desired < len(live):
		// Starting replicas go first (newest first), then the ready ones
		// with the fewest requests in flight.
		slices.SortFunc(live, func(a, b *replica) int {
			switch {
			case a.ready != b.ready:
				if !a.ready {
					return -1
				}
				return 1
			case !a.ready:
				return b.order - a.order
			case a.inflight != b.inflight:
				return a.inflight - b.inflight
			}
			return a.order - b.order
		})
		for _, r := range live[:len(live)-d.Desired] {
			r.removed = true
			if r.inflight == 0 {
				r.gone = true
				s.existing--
			}
		}
	}
	// Forget replicas that are gone.
	s.replicas = slices.DeleteFunc(s.replicas, func(r *replica) bool { return r.gone })
}

func (s *sim) add(readyAt float64, ready bool) {
	s.replicas = append(s.replicas, &replica{readyAt: readyAt, ready: ready, order: s.created})
	s.created++
	s.existing++
}

// dispatch starts waiting requests, first come first served, on the ready
// replica with the fewest in flight, while there is a free slot.
func (s *sim) dispatch() {
	for len(s.queue) > 0 {
		var best *replica
		for _, r := range s.replicas {
			if !r.ready || r.removed || (s.cc > 0 && r.inflight >= s.cc) {
				continue
			}
			if best == nil || r.inflight < best.inflight {
				best = r
			}
		}
		if best == nil {
			return
		}
		req := s.trace[s.queue[0]]
		s.started[s.queue[0]] = s.now
		s.queue = s.queue[1:]
		s.waits = append(s.waits, s.now-req.Arrival)
		if best.readyAt > req.Arrival {
			s.coldWaits++
		}
		best.inflight++
		heap.Push(&s.deps, departure{t: s.now + req.Duration, rep: best})
	}
}

func (s *sim) summary() Summary {
	w := slices.Clone(s.waits)
	slices.Sort(w)
	return Summary{
		ReplicaSeconds: s.replicaSec,
		ColdStarts:     s.coldStarts,
		WaitP50:        percentile(w, 50),
		WaitP95:        percentile(w, 95),
		WaitP99:        percentile(w, 99),
		MaxQueue:       s.maxQueue,
		ColdWaits:      s.coldWaits,
		Requests:       len(w),
		Unserved:       len(s.queue),
	}
}

// percentile is the nearest-rank percentile of sorted values (0 for none).
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

// copyOptions copies o deeply enough to change its maps.
func copyOptions(o Options) Options {
	o.Annotations = maps.Clone(o.Annotations)
	o.Config = maps.Clone(o.Config)
	return o
}
