package coldstart

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/infera-dev/infera/internal/workload"
)

// MetricName is the histogram of cold start phases, in seconds.
const MetricName = "infera_cold_start_seconds"

// Buckets are the histogram's upper bounds in seconds: 1 ms to 10 min, about 2.5x apart (a
// loopback hop, a process exec, a model load).
var Buckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60, 120, 300, 600}

// Knative's revision labels, then the phase.
var labels = []string{"namespace_name", "service_name", "configuration_name", "revision_name", "phase"}

// Config wires a Tracker.
type Config struct {
	// Registerer, when set, gets infera_cold_start_seconds.
	Registerer prometheus.Registerer
	// Logger gets one Debug line per finished cold start; nil discards.
	Logger *slog.Logger
}

// Replica is what the supervisor reports of one replica: its times on the supervisor's clock.
type Replica struct {
	Revision workload.RevisionID
	Name     string
	Created  time.Time
	// ImageReady is when its image was present (pulled, or found in the engine or an
	// ImageCache); zero for a process.
	ImageReady time.Time
	Started    time.Time // its current process started; zero while none runs
	Ready      time.Time // it became Ready; zero while it is not Ready
}

// Tracker assembles cold starts from the reports of the controller, the supervisor and the
// gateway (see the package documentation), and records each finished one.
type Tracker struct {
	log  *slog.Logger
	hist *prometheus.HistogramVec // nil without a Registerer

	mu   sync.Mutex
	revs map[workload.RevisionID]*revision
}

// revision is one revision's cold start in progress and its last finished one.
type revision struct {
	labels  [4]string // namespace, service, configuration, revision: Knative's metric labels
	service string    // namespace/name
	open    *ColdStart
	waiting bool // a request is held for open
	last    *ColdStart
}

// New builds a Tracker; its only error is the Registerer's refusal of the histogram.
func New(cfg Config) (*Tracker, error) {
	t := &Tracker{log: cfg.Logger, revs: map[workload.RevisionID]*revision{}}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer != nil {
		t.hist = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: MetricName,
			Help: "Time spent in each phase of a cold start (a replica started for a revision with no ready replica " +
				"while a request waited, or a revision's first start): dataset, placement, process_start, readiness, first_byte",
			Buckets: Buckets,
		}, labels)
		if err := cfg.Registerer.Register(t.hist); err != nil {
			return nil, fmt.Errorf("coldstart: register %s: %w", MetricName, err)
		}
	}
	return t, nil
}

// Added reports that the controller started scaling rev at at, wanting replicas of it at
// once; datasetWait, when not zero, is when rev went Pending on a Dataset before it could
// start. A revision added with replicas wanted begins its first start.
func (t *Tracker) Added(rev workload.Revision, at time.Time, replicas int, datasetWait time.Time) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.revs[rev.ID]
	if r == nil {
		r = &revision{}
		t.revs[rev.ID] = r
	}
	r.labels = [4]string{rev.Namespace, rev.Service, rev.Configuration, rev.Name}
	r.service = rev.Namespace + "/" + rev.Service
	if replicas > 0 && r.open == nil && r.last == nil {
		r.open = &ColdStart{Revision: rev.ID, Service: r.service, Trigger: TriggerFirstStart, DatasetWait: datasetWait, Demand: at}
	}
}

// Demand reports a request that arrived at at and waits for a revision with no ready replica.
// It begins a scale from zero, or marks the cold start in progress as having a held request.
// A revision not Added is ignored.
func (t *Tracker) Demand(id workload.RevisionID, at time.Time) {
	if t == nil {
		return
	}
	t.mu.Lock()
	r := t.revs[id]
	if r == nil {
		t.mu.Unlock()
		return
	}
	var done *finished
	if r.open != nil && !r.open.Ready.IsZero() {
		// Ready, and still waiting for a first byte that never came (the held requests ended
		// without a response): that one is over, this is a new one.
		done = t.finishLocked(r)
	}
	if r.open == nil {
		r.open = &ColdStart{Revision: id, Service: r.service, Trigger: TriggerRequest, Demand: at}
	}
	r.waiting = true
	t.mu.Unlock()
	t.record(done)
}

// Decided reports a scaling decision for a revision. At zero replicas, a cold start whose
// replica never became Ready is dropped, and one waiting for a first byte is finished without.
func (t *Tracker) Decided(id workload.RevisionID, replicas int) {
	if t == nil || replicas > 0 {
		return
	}
	t.mu.Lock()
	var done *finished
	if r := t.revs[id]; r != nil && r.open != nil {
		if r.open.Ready.IsZero() {
			r.open, r.waiting = nil, false
		} else {
			done = t.finishLocked(r)
		}
	}
	t.mu.Unlock()
	t.record(done)
}

// Replica reports a replica's times as its process started or its readiness changed. The
// first replica to become Ready since the cold start in progress began is that cold start's.
func (t *Tracker) Replica(rep Replica) {
	if t == nil || rep.Ready.IsZero() {
		return
	}
	t.mu.Lock()
	var done *finished
	if r := t.revs[rep.Revision]; r != nil && r.open != nil && r.open.Ready.IsZero() {
		switch {
		case rep.Created.Before(r.open.Demand):
			// A replica that was there already: no replica was started for this wait.
			r.open, r.waiting = nil, false
		default:
			r.open.Replica, r.open.Created, r.open.Started, r.open.Ready = rep.Name, rep.Created, rep.Started, rep.Ready
			r.open.ImageReady = rep.ImageReady
			if !r.waiting || !r.open.FirstByte.IsZero() {
				done = t.finishLocked(r)
			}
		}
	}
	t.mu.Unlock()
	t.record(done)
}

// FirstByte reports the first response byte, from replica at at, of a request that was held
// for lack of a ready replica: the end of the cold start in progress.
func (t *Tracker) FirstByte(id workload.RevisionID, replica string, at time.Time) {
	if t == nil {
		return
	}
	t.mu.Lock()
	var done *finished
	if r := t.revs[id]; r != nil && r.open != nil && r.open.FirstByte.IsZero() {
		// A first byte reported before the replica's Ready (the endpoint reached the gateway
		// through another flush) waits for it.
		r.open.FirstByte, r.waiting = at, true
		if !r.open.Ready.IsZero() {
			done = t.finishLocked(r)
		}
	}
	t.mu.Unlock()
	t.record(done)
}

// Remove forgets a revision the controller no longer scales.
func (t *Tracker) Remove(id workload.RevisionID) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.revs, id)
}

// Last is the revision's last finished cold start.
func (t *Tracker) Last(id workload.RevisionID) (ColdStart, bool) {
	if t == nil {
		return ColdStart{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if r := t.revs[id]; r != nil && r.last != nil {
		return *r.last, true
	}
	return ColdStart{}, false
}

// finished is a cold start to record, with the metric labels of its revision.
type finished struct {
	ColdStart
	labels [4]string
}

// finishLocked ends r's cold start in progress and returns it for record.
func (t *Tracker) finishLocked(r *revision) *finished {
	done := r.open
	r.last, r.open, r.waiting = done, nil, false
	return &finished{*done, r.labels}
}

// record observes a finished cold start's phases and logs it; nil is nothing to record. It
// runs outside the lock.
func (t *Tracker) record(done *finished) {
	if done == nil {
		return
	}
	spans := done.Spans()
	if t.hist != nil {
		l := done.labels
		for _, s := range spans {
			t.hist.WithLabelValues(l[0], l[1], l[2], l[3], string(s.Phase)).Observe(s.Duration.Seconds())
		}
	}
	args := make([]any, 0, 10+2*len(spans))
	args = append(args, "service", done.Service, "revision", string(done.Revision), "replica", done.Replica, "trigger", string(done.Trigger))
	for _, s := range spans {
		args = append(args, string(s.Phase), s.Duration)
	}
	args = append(args, "total", done.Total())
	t.log.Debug("cold start", args...)
}
