// Package autoscaler is infera's Knative Pod Autoscaler (KPA): given a
// revision's load and its ready pods, how many pods it should have. It
// reproduces knative.dev/serving v0.50.0 decision for decision and is tested
// against it on the same inputs.
//
// The package is pure: no goroutines, no clock reads (every method that
// depends on time takes now), no I/O. The tick loop, the gateway that
// measures load and the supervisor that runs replicas live elsewhere.
//
// # Pipeline
//
//		gateway ──Stat every 1 s──▶ Metrics ──Observation──▶ Decider ──Recommendation──▶ DeciderStatus
//		          (concurrency, rps)  stable & panic windows     stable/panic modes          last valid one
//		                                                                                          │
//		supervisor ◀──ScaleDecision (Want, Apply, Proxy)── ScalerState.Reconcile ◀────────────────┘
//		                                                    bounds, initial scale, scale to zero
//
//	  - Buckets: one-second buckets over a sliding window, averaged linearly
//	    or with exponential weights (Knative's aggregation package).
//	  - Metrics: a revision's stable window (stable-window, 60 s, or the
//	    autoscaling.knative.dev/window annotation) and panic window (a
//	    percentage of it, 10 %) of the scaling metric.
//	  - Decider: Knative's scaling.autoscaler.Scale. Each tick it wants
//	    ceil(stable/target) and ceil(panic/target) pods, bounded per tick by
//	    the scale-up and scale-down rates, lifted to activation-scale, and
//	    picks one according to its mode (below), then holds scale-downs back
//	    for scale-down-delay. It also reports the excess burst capacity,
//	    floor(ready×total − target-burst-capacity − panic load).
//	  - DeciderStatus: what Knative's MultiScaler keeps: the last valid
//	    recommendation (-1 before the first); a tick without data changes
//	    nothing.
//	  - ScalerState: Knative's KPA reconciler around the decider: min/max
//	    scale, initial scale until first reached, and the rules for zero
//	    (deactivate after a stable window active, then wait out the grace
//	    period and the pod retention period).
//	  - Config: config-autoscaler and the revision's annotations into all of
//	    the above, with Knative's own parser and annotation helpers.
//	  - Revision: the four together for one revision, one Tick at a time.
//	  - Autoscaler: every revision of an infera instance (Knative's
//	    MultiScaler and KPA reconciler): Upsert and Remove revisions, Record
//	    the gateway's serving.Stat each second, Tick every TickInterval with
//	    the ready replicas, Poke with the gateway's stat for a request that
//	    found no ready replica (the activator's first-request stat: recorded,
//	    then decided on at once). Each Decision says how many replicas to
//	    run (Desired: a reconcile that decides without applying, such as
//	    deactivating, leaves the last applied count), whether the gateway
//	    should act as the activator (ActivatorInPath), and the decider's
//	    view for metrics.
//
// # Using it from infera up
//
//	a := autoscaler.New(cc)                       // config-autoscaler
//	a.Upsert(now, id, rev.Annotations, rev.ContainerConcurrency)
//	a.Record(stat)                                 // gateway, every second
//	for id, d := range a.Tick(now, readyByRevision) { supervisor.Scale(id, d.Desired) }
//	st := workload.Stat{Revision: id, Time: arrival, Concurrency: 1, Requests: 1}
//	if d, ok := a.Poke(now, st, ready); ok { supervisor.Scale(id, d.Desired) } // cold request
//
// The HPA class (hpa.autoscaling.knative.dev) is not implemented: NewConfig
// and Upsert reject it with ErrNotKPA.
//
// # Decider modes
//
// Let ready be the ready pods (0 counts as 1), wantPanic = ceil(panic/target)
// and SW the stable window.
//
//	                     wantPanic/ready >= threshold
//	                     (panicTime = now)
//	     ┌────────┐  ─────────────────────────────▶  ┌─────────┐
//	     │ STABLE │                                  │  PANIC  │ ◀─┐ wantPanic/ready >= threshold:
//	     └────────┘  ◀─────────────────────────────  └─────────┘ ──┘ panicTime = now (extend)
//	desired = stable     below threshold and          desired = max(stable, panic,
//	  candidate          panicTime + SW < now          highest desired this episode)
//	                     (maxPanicPods = 0)            i.e. never scales down
//
// A decider made while more than one pod is ready starts in PANIC holding
// those pods, so that an autoscaler restarted without history does not
// scale a busy revision down.
//
// # Activity (the PodAutoscaler's Active condition, in ScalerState)
//
//	              ready >= min ready
//	┌────────────┐ ──────────────▶ ┌────────┐  decider wants 0 for a stable window
//	│ ACTIVATING │                 │ ACTIVE │ ─────────────────────────────────────┐
//	└────────────┘ ◀────────────── └────────┘   (until then: held at 1 pod)        ▼
//	  │    ▲       ready < min ready    ▲                                     ┌──────────┐
//	  │    └────── wants pods ──────────┼──────────────────────────────────── │ INACTIVE │
//	  │                                 └──── wants pods, ready >= min ─────  └──────────┘
//	  └── activating past progress deadline + 30 s: scaled to 0 ─────────────────▲
//
// Inactive, the last pods go once the revision has been inactive for
// max(scale-to-zero-grace-period, pod retention), or sooner, once the pod
// retention has passed and the activator (the gateway) has held its traffic
// for the grace period. enable-scale-to-zero false keeps one pod.
//
// # Differences from Knative
//
// Infera has no Kubernetes, so there is no ServerlessService, no activator
// probe and no deployment patch: the gateway is always in the request path,
// and ScaleDecision says what to apply. ScalerState.Reconcile documents each
// difference. Buckets.ResizeWindow takes now where Knative reads the wall
// clock.
//
// A poke decides at once for a revision whose decider has made no
// recommendation yet (an initial-scale 0 revision that never had traffic,
// every revision right after infera up restarts), where Knative's
// MultiScaler.Poke acts only on a standing 0 and leaves it to the next 2 s
// tick; that tick decides from the same stat, so the decision is Knative's,
// made without the wait (Autoscaler.Poke, TestPokeDecidesAsKnative).
package autoscaler
