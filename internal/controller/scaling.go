package controller

import (
	"cmp"
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/infera-dev/infera/internal/autoscaler"
	"github.com/infera-dev/infera/internal/clock"
	"github.com/infera-dev/infera/internal/coldstart"
	"github.com/infera-dev/infera/internal/workload"
)

// Scaler decides how many replicas each running revision wants: stats in, desired scale out.
// It is pure: time is an argument and it starts nothing. autoscaler.Autoscaler (Knative's KPA)
// and autoscaler.Fixed are the two.
type Scaler interface {
	Upsert(now time.Time, id workload.RevisionID, annotations map[string]string, containerConcurrency int) error
	Decision(id workload.RevisionID) (autoscaler.Decision, bool)
	Remove(id workload.RevisionID)
	Record(s workload.Stat)
	Tick(now time.Time, ready map[workload.RevisionID]int) map[workload.RevisionID]autoscaler.Decision
	// Poke hands over the stat of a request that found a revision with no ready replica
	// (one request in flight, one arrival at st.Time: Knative's activator's first-request
	// stat), with the revision's ready replicas now. The scaler records it, as Knative's
	// autoscaler records every stat it receives, and decides at once when it calls for a
	// decision (true), or leaves it to the next tick (false).
	Poke(now time.Time, st workload.Stat, ready int) (autoscaler.Decision, bool)
	SetConfig(now time.Time, cc *autoscaler.ClusterConfig) error
}

// Stats and scaling cadence, as Knative: metrics every second, a decision every 2 s.
const (
	statPeriod = time.Second
	tickPeriod = 2 * time.Second
)

// scaling is the autoscaling loop: the gateway's stats in every second, a scaler tick every
// 2 s, and pokes for revisions at zero as requests arrive. It runs on its own goroutine, so a
// burst of reconcile passes never delays a scaling decision. The reconcile goroutine adds and
// removes revisions; decisions go to the supervisor (replicas) and the gateway (activator in
// path) in the order they are made. It tells the cold start tracker what it adds, every
// poke for a revision with no ready replica and every decision, before carrying it out.
type scaling struct {
	gw    Gateway
	sup   Supervisor
	cold  *coldstart.Tracker // nil: none tracked
	clock clock.Clock
	log   *slog.Logger

	// Pokes wait here for the loop, one per revision (the first arrival counts), so none is
	// ever dropped and poke never blocks.
	pokeMu  sync.Mutex
	pending map[workload.RevisionID]time.Time // revision -> arrival of its first request
	poked   chan struct{}                     // one slot: pending is not empty

	mu        sync.Mutex
	scaler    Scaler
	config    map[string]string // config-autoscaler in effect
	revs      map[workload.RevisionID]workload.Revision
	decisions map[workload.RevisionID]autoscaler.Decision
}

func newScaling(s Scaler, gw Gateway, sup Supervisor, cold *coldstart.Tracker, c clock.Clock, log *slog.Logger) *scaling {
	return &scaling{
		gw: gw, sup: sup, cold: cold, clock: c, log: log, scaler: s,
		pending: map[workload.RevisionID]time.Time{},
		poked:   make(chan struct{}, 1),
		revs:    map[workload.RevisionID]workload.Revision{}, decisions: map[workload.RevisionID]autoscaler.Decision{},
	}
}

// add starts scaling a revision at its initial decision; datasetWait, when not zero, is when
// it went Pending on a Dataset before it could start (its first start's dataset phase).
func (s *scaling) add(rev workload.Revision, datasetWait time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.clock.Now()
	if err := s.scaler.Upsert(now, rev.ID, rev.Annotations, rev.ContainerConcurrency); err != nil {
		return err
	}
	s.revs[rev.ID] = rev
	d, _ := s.scaler.Decision(rev.ID)
	s.cold.Added(rev, now, d.Desired, datasetWait)
	s.decideLocked(rev, d)
	return nil
}

func (s *scaling) remove(id workload.RevisionID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scaler.Remove(id)
	delete(s.revs, id)
	delete(s.decisions, id)
	s.cold.Remove(id)
}

// setConfig applies config-autoscaler's data when it changed.
func (s *scaling) setConfig(data map[string]string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.config != nil && maps.Equal(s.config, data) {
		return nil
	}
	cc, err := autoscaler.ParseClusterConfig(data)
	if err != nil {
		return err
	}
	if err := s.scaler.SetConfig(s.clock.Now(), cc); err != nil {
		return err
	}
	s.config = maps.Clone(data)
	if s.config == nil {
		s.config = map[string]string{}
	}
	return nil
}

// poke reports a request waiting for a revision with no ready replica; it never blocks. The
// gateway calls it on the request's goroutine as the request arrives, so the time read here
// is the arrival, which the activator's stat carries (Knative stamps it on receipt).
func (s *scaling) poke(id workload.RevisionID) {
	at := s.clock.Now()
	s.pokeMu.Lock()
	if _, ok := s.pending[id]; !ok {
		s.pending[id] = at
	}
	s.pokeMu.Unlock()
	select {
	case s.poked <- struct{}{}:
	default:
	}
}

// takePokes returns the pokes waiting, oldest first.
func (s *scaling) takePokes() []pendingPoke {
	s.pokeMu.Lock()
	out := make([]pendingPoke, 0, len(s.pending))
	for id, at := range s.pending {
		out = append(out, pendingPoke{id, at})
	}
	clear(s.pending)
	s.pokeMu.Unlock()
	slices.SortFunc(out, func(a, b pendingPoke) int { return cmp.Or(a.at.Compare(b.at), cmp.Compare(a.id, b.id)) })
	return out
}

type pendingPoke struct {
	id workload.RevisionID
	at time.Time
}

// demandStat is what Knative's activator reports at once for a revision's first request: one
// request in flight, one arrival.
func demandStat(id workload.RevisionID, at time.Time) workload.Stat {
	return workload.Stat{Revision: id, Time: at, Concurrency: 1, Requests: 1}
}

func (s *scaling) decision(id workload.RevisionID) (autoscaler.Decision, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.decisions[id]
	return d, ok
}

func (s *scaling) snapshot() map[workload.RevisionID]autoscaler.Decision {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.decisions)
}

// run is the loop; it returns when ctx ends.
func (s *scaling) run(ctx context.Context) error {
	stats := s.clock.NewTicker(statPeriod)
	defer stats.Stop()
	lastTick := s.clock.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.poked:
			for _, p := range s.takePokes() {
				s.handlePoke(p.id, p.at)
			}
		case now := <-stats.C():
			s.collect(now)
			if now.Sub(lastTick) >= tickPeriod-statPeriod/2 {
				lastTick = now
				s.tick(now)
			}
		}
	}
}

// handlePoke hands the scaler the activator's stat for the request that arrived at at, with
// the replicas ready now, and carries out a decision made on it.
func (s *scaling) handlePoke(id workload.RevisionID, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rev, ok := s.revs[id]
	if !ok {
		return
	}
	ready := s.sup.Status(id).Ready
	if ready == 0 {
		s.cold.Demand(id, at) // before a decision can start a replica for it
	}
	d, changed := s.scaler.Poke(s.clock.Now(), demandStat(id, at), ready)
	s.log.Debug("poke", "revision", id, "decided", changed, "desired", d.Desired, "decider", d.DeciderDesired)
	if changed {
		s.decideLocked(rev, d)
	}
}

// collect feeds the gateway's per-second stats to the scaler. The gateway reports only seconds
// with traffic; a revision with replicas and no traffic reports zeros, as Knative's
// queue-proxies do every second, so its averages fall and it can scale down.
func (s *scaling) collect(now time.Time) {
	stats := s.gw.Collect(now)
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := make(map[workload.RevisionID]bool, len(stats))
	for _, st := range stats {
		s.scaler.Record(st)
		seen[st.Revision] = true
	}
	for id := range s.revs {
		if !seen[id] && s.sup.Status(id).Running > 0 {
			s.scaler.Record(workload.Stat{Revision: id, Time: now.Truncate(time.Second)})
		}
	}
}

func (s *scaling) tick(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ready := make(map[workload.RevisionID]int, len(s.revs))
	for id := range s.revs {
		ready[id] = s.sup.Status(id).Ready
	}
	for id, d := range s.scaler.Tick(now, ready) {
		if rev, ok := s.revs[id]; ok {
			s.decideLocked(rev, d)
		}
	}
}

func (s *scaling) decideLocked(rev workload.Revision, d autoscaler.Decision) {
	s.decisions[rev.ID] = d
	s.cold.Decided(rev.ID, d.Desired)
	s.gw.SetActivatorInPath(rev.ID, d.ActivatorInPath)
	s.sup.Scale(rev, d.Desired)
}
