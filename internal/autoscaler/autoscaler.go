package autoscaler

import (
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/infera-dev/infera/internal/workload"
)

// Autoscaler is the KPA for every revision of an infera instance: Knative's
// MultiScaler, metric collector and KPA reconciler in one pure value. The
// owner feeds it the gateway's stats (Record), calls Tick every TickInterval
// with the ready replicas of each revision, and carries out the decisions;
// when a request arrives for a revision with no ready replica it calls Poke
// with the gateway's stat for that request, to decide at once. It holds no
// goroutine and reads no clock. It is not safe for concurrent use; the owner
// serialises calls.
type Autoscaler struct {
	cc   *ClusterConfig
	revs map[workload.RevisionID]*managed
}

// managed is one revision under the Autoscaler.
type managed struct {
	rev    *Revision
	params RevisionParams
	// replicas is the scale last applied (Knative's deployment replicas):
	// a reconcile that decides but does not apply leaves it.
	replicas int32
	// ready is the ready count of the last tick.
	ready int
	// pokeAdj is the stat Poke recorded ahead of the gateway's next one,
	// which leaves it out (Knative's activator subtracts its immediate
	// first-request report from its next one).
	pokeAdj Stat
	last    Decision
}

// Decision is one revision's autoscaling outcome at a tick.
type Decision struct {
	// Desired is the number of replicas the revision should have now: the
	// decider's recommendation after min/max/initial scale and the
	// scale-to-zero rules, or the replicas last decided while a reconcile
	// holds them (e.g. the last replica during the scale-to-zero grace).
	Desired int
	// DeciderDesired is the decider's standing recommendation before bounds
	// and scale-to-zero rules; -1 until it has had data.
	DeciderDesired int
	// Panic: the decider is in panic mode (it will not scale down).
	Panic bool
	// ExcessBurstCapacity is the spare capacity beyond the panic load and
	// target-burst-capacity (Knative: negative puts the activator in the
	// path; -1 when target-burst-capacity is -1, 0 when it is 0).
	ExcessBurstCapacity float64
	// ActivatorInPath is Knative's ServerlessService Proxy mode: requests
	// should be held and spread by the gateway's activator rather than go
	// straight to the replicas. True when the excess burst capacity is
	// negative (always with target-burst-capacity -1) and whenever the
	// revision is wanted at zero or its scale is unknown.
	ActivatorInPath bool
	// The window averages of both metrics at the tick, and the per-replica
	// target of the scaling metric (after target-utilization-percentage).
	StableConcurrency, PanicConcurrency float64
	StableRPS, PanicRPS                 float64
	Target                              float64
	Metric                              Metric
	// Ready is the ready replicas the decision was made with.
	Ready int
	// Active is the PodAutoscaler's Active condition after the decision.
	Active ActiveState
}

// New returns an Autoscaler under config-autoscaler cc (nil: Knative's
// defaults).
func New(cc *ClusterConfig) *Autoscaler {
	if cc == nil {
		cc = DefaultClusterConfig()
	}
	return &Autoscaler{cc: cc, revs: map[workload.RevisionID]*managed{}}
}

// Upsert starts autoscaling a revision at now, or updates one already
// known when its annotations or containerConcurrency changed (Knative's
// revisions are immutable, so that is rare). A new revision is reachable and
// starts at its initial scale, activating. annotations are the revision's
// template annotations; the Autoscaler keeps the map and never modifies it,
// so the caller must not either. The error wraps ErrInvalidAnnotations or
// ErrNotKPA; on error nothing changes.
func (a *Autoscaler) Upsert(now time.Time, id workload.RevisionID, annotations map[string]string, containerConcurrency int) error {
	params := RevisionParams{Annotations: annotations, ContainerConcurrency: int64(containerConcurrency), Reachable: true}
	if m, ok := a.revs[id]; ok {
		params.Reachable = m.params.Reachable
		params.ProgressDeadline = m.params.ProgressDeadline
		if m.params.ContainerConcurrency == params.ContainerConcurrency && maps.Equal(m.params.Annotations, annotations) {
			return nil
		}
		return a.update(now, id, m, params)
	}
	cfg, err := NewConfig(a.cc, params)
	if err != nil {
		return fmt.Errorf("%w (revision %s)", err, id)
	}
	rev := NewRevision(cfg, 0, now)
	m := &managed{rev: rev, params: params, replicas: cfg.Scaler.InitialScale}
	m.last = m.decision(rev.Status(), rev.Scaler(), Load{}, cfg.Decider)
	a.revs[id] = m
	return nil
}

func (a *Autoscaler) update(now time.Time, id workload.RevisionID, m *managed, params RevisionParams) error {
	cfg, err := NewConfig(a.cc, params)
	if err != nil {
		return fmt.Errorf("%w (revision %s)", err, id)
	}
	m.rev.Update(now, cfg)
	m.params = params
	return nil
}

// SetReachable records whether a route sends traffic to the revision
// (Knative's routing state: a revision no route targets is "reserve",
// unreachable: it ignores min-scale and may go to zero at once).
func (a *Autoscaler) SetReachable(now time.Time, id workload.RevisionID, reachable bool) error {
	m, ok := a.revs[id]
	if !ok || m.params.Reachable == reachable {
		return nil
	}
	params := m.params
	params.Reachable = reachable
	return a.update(now, id, m, params)
}

// SetConfig applies a new config-autoscaler to every revision, as Knative
// updates running deciders and metric collections (windows resized, decider
// state kept). It is all or nothing: when some revision's annotations do not
// validate under cc, nothing changes and the joined error names each. nil
// is Knative's defaults.
func (a *Autoscaler) SetConfig(now time.Time, cc *ClusterConfig) error {
	if cc == nil {
		cc = DefaultClusterConfig()
	}
	cfgs := make(map[workload.RevisionID]Config, len(a.revs))
	var errs []error
	for id, m := range a.revs {
		cfg, err := NewConfig(cc, m.params)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w (revision %s)", err, id))
			continue
		}
		cfgs[id] = cfg
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	a.cc = cc
	for id, m := range a.revs {
		m.rev.Update(now, cfgs[id])
	}
	return nil
}

// Remove stops autoscaling a revision.
func (a *Autoscaler) Remove(id workload.RevisionID) { delete(a.revs, id) }

// Len is the number of revisions autoscaled.
func (a *Autoscaler) Len() int { return len(a.revs) }

// Record adds one second of the gateway's load for a revision (s.Time is
// the end of that second, as Knative's collector records a report when it
// arrives). Stats for unknown revisions are dropped.
func (a *Autoscaler) Record(s workload.Stat) {
	m, ok := a.revs[s.Revision]
	if !ok {
		return
	}
	st := Stat{Concurrency: s.Concurrency, Requests: s.Requests}
	if m.pokeAdj != (Stat{}) {
		st.Concurrency = max(st.Concurrency-m.pokeAdj.Concurrency, 0)
		st.Requests = max(st.Requests-m.pokeAdj.Requests, 0)
		m.pokeAdj = Stat{}
	}
	m.rev.Record(s.Time, st)
}

// Tick decides every revision at now. ready holds the ready replicas of each
// revision (absent: 0). The result has one Decision per revision.
func (a *Autoscaler) Tick(now time.Time, ready map[workload.RevisionID]int) map[workload.RevisionID]Decision {
	out := make(map[workload.RevisionID]Decision, len(a.revs))
	for id, m := range a.revs {
		out[id] = m.tick(now, ready[id])
	}
	return out
}

// Poke takes the gateway's stat for a request that found a revision with no
// ready replica: one request in flight and one arrival at st.Time, the stat
// Knative's activator sends at a revision's first request; ready is the
// revision's ready replicas now (what Knative's decider reads from its pod
// counter when a poke makes it tick: normally 0). It does what Knative's
// autoscaler does with every stat it receives (cmd/autoscaler's accept): it
// records the stat (MetricCollector.Record), then pokes (MultiScaler.Poke). The next Record for the revision leaves the stat out,
// as the activator subtracts its first-request report from its next one;
// a poke before that Record records nothing more (the activator reports a
// revision's first request once per report period). An unknown revision's
// stat is dropped.
//
// The poke decides now, rather than at the next tick, when the stat carries
// load and the decider stands at zero (Knative's rule, DeciderStatus.NeedsPoke)
// or has made no recommendation yet: it then returns the decision and true.
// Otherwise it returns the last decision and false and the next tick decides.
//
// Deciding a revision with no recommendation yet (DeciderDesired -1: one
// that never had traffic, such as an initial-scale 0 revision, and every
// revision right after infera up restarts) is where infera differs from
// Knative v0.50.0, whose MultiScaler.Poke acts only on a standing 0 and
// leaves the revision to its next 2 s tick. That tick decides from the same
// stat, already in the collector, so the decision is the one Knative makes
// when its tick falls at the request's arrival; infera only stops waiting
// for it. TestPokeDecidesAsKnative checks every poke against Knative's
// collector and decider.
func (a *Autoscaler) Poke(now time.Time, st workload.Stat, ready int) (Decision, bool) {
	m, ok := a.revs[st.Revision]
	if !ok {
		return Decision{}, false
	}
	s := Stat{Concurrency: st.Concurrency, Requests: st.Requests}
	if m.pokeAdj == (Stat{}) {
		at := st.Time
		if at.IsZero() {
			at = now
		}
		m.rev.Record(at, s)
		m.pokeAdj = s
	}
	if !pokeDecides(m.rev.Status(), s) {
		return m.last, false
	}
	return m.tick(now, ready), true
}

// pokeDecides is Knative's rule for deciding on a stat at once
// (DeciderStatus.NeedsPoke), widened to a decider that has made no
// recommendation yet (see Poke).
func pokeDecides(status DeciderStatus, s Stat) bool {
	return status.NeedsPoke(s) || (status.DesiredScale == -1 && s.Concurrency != 0)
}

// Decision is the revision's last decision (from Upsert until the first
// tick: its initial scale).
func (a *Autoscaler) Decision(id workload.RevisionID) (Decision, bool) {
	m, ok := a.revs[id]
	if !ok {
		return Decision{}, false
	}
	return m.last, true
}

func (m *managed) tick(now time.Time, ready int) Decision {
	t := m.rev.Tick(now, ready)
	if t.Decision.Apply {
		m.replicas = t.Decision.Want
	}
	m.ready = ready
	d := m.decision(t.Status, m.rev.Scaler(), t.Load, m.rev.decider.Spec())
	d.Panic = t.Recommendation.PanicMode
	d.ActivatorInPath = t.Decision.Proxy
	m.last = d
	return d
}

func (m *managed) decision(st DeciderStatus, sc ScalerState, load Load, spec Spec) Decision {
	return Decision{
		Desired:             int(m.replicas),
		DeciderDesired:      int(st.DesiredScale),
		Panic:               m.rev.PanicMode(),
		ExcessBurstCapacity: float64(st.ExcessBurstCapacity),
		ActivatorInPath:     sc.Proxy,
		StableConcurrency:   load.StableConcurrency,
		PanicConcurrency:    load.PanicConcurrency,
		StableRPS:           load.StableRPS,
		PanicRPS:            load.PanicRPS,
		Target:              spec.TargetValue,
		Metric:              spec.ScalingMetric,
		Ready:               m.ready,
		Active:              sc.Active,
	}
}
