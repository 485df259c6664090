package autoscaler

import "time"

// Revision is all the autoscaling state of one revision: its metric windows,
// its decider and the decider's standing status, and the scaler's state
// around them. It is what one KPA tick runs on. It is not safe for
// concurrent use; the owner serialises Record, Tick and Update.
type Revision struct {
	metrics Metrics
	decider Decider
	status  DeciderStatus
	scaler  ScalerState
	spec    ScalerSpec
}

// Tick is one tick's outcome.
type Tick struct {
	// Recommendation is the decider's (ScaleValid false: no data, ignored).
	Recommendation Recommendation
	// Status is the standing recommendation after it.
	Status DeciderStatus
	// Changed: Status changed in a way Knative reports to the reconciler.
	Changed bool
	// Decision is what to do with the replicas.
	Decision ScaleDecision
	// Load is both metrics' window averages at the tick.
	Load Load
}

// NewRevision starts autoscaling a revision created (or taken over) at now
// with readyPods ready.
func NewRevision(cfg Config, readyPods int, now time.Time) *Revision {
	r := &Revision{spec: cfg.Scaler, status: NewDeciderStatus(cfg.Decider), scaler: NewScalerState(now)}
	r.scaler.start(now, cfg.Scaler)
	r.metrics.init(cfg.Metrics)
	r.decider.init(cfg.Decider, readyPods, now)
	return r
}

// Record adds one second's stat.
func (r *Revision) Record(now time.Time, s Stat) { r.metrics.Record(now, s) }

// Tick decides at now with readyPods ready: the decider's recommendation,
// then the reconciler's rules. Metric windows that have gone idle give their
// memory back.
func (r *Revision) Tick(now time.Time, readyPods int) Tick {
	obs, load := r.metrics.observeLoad(now)
	rec := r.decider.Scale(now, readyPods, obs)
	changed := r.status.Apply(rec)
	dec := r.scaler.Reconcile(now, r.spec, r.status, readyPods)
	r.metrics.Release(now)
	return Tick{Recommendation: rec, Status: r.status, Changed: changed, Decision: dec, Load: load}
}

// Update applies a new configuration (config-autoscaler changed, or the
// revision's reachability did), as Knative updates a running decider and
// metric collection: windows are resized, the decider keeps its state.
func (r *Revision) Update(now time.Time, cfg Config) {
	r.metrics.Update(now, cfg.Metrics)
	r.decider.Update(cfg.Decider)
	r.spec = cfg.Scaler
}

// Status is the decider's standing recommendation.
func (r *Revision) Status() DeciderStatus { return r.status }

// Spec is the scaler spec in force.
func (r *Revision) Spec() ScalerSpec { return r.spec }

// Scaler is the scaler's state.
func (r *Revision) Scaler() ScalerState { return r.scaler }

// PanicMode reports whether the decider is in panic mode.
func (r *Revision) PanicMode() bool { return r.decider.PanicMode() }
