package autoscaler

import "time"

// DeciderStatus is a decider's standing recommendation (Knative's
// scaling.DeciderStatus as kept by its MultiScaler): the last valid
// Recommendation, or the initial values until there is one.
type DeciderStatus struct {
	// DesiredScale is -1 until the decider has made a valid recommendation.
	DesiredScale        int32
	ExcessBurstCapacity int32
}

// NewDeciderStatus is the status of a decider just made for spec: no desired
// scale yet, and the burst capacity the initial scale would leave.
func NewDeciderStatus(spec Spec) DeciderStatus {
	s := DeciderStatus{DesiredScale: -1}
	switch tbc := spec.TargetBurstCapacity; tbc {
	case -1, 0:
		s.ExcessBurstCapacity = int32(tbc)
	default:
		s.ExcessBurstCapacity = int32(float64(spec.InitialScale)*spec.TotalValue - tbc)
	}
	return s
}

// Apply takes r if it is valid (an invalid recommendation changes nothing)
// and reports whether Knative would tell the PodAutoscaler about it: the
// desired scale changed or the burst capacity changed sign.
func (s *DeciderStatus) Apply(r Recommendation) bool {
	if !r.ScaleValid {
		return false
	}
	changed := s.DesiredScale != r.DesiredPodCount ||
		(s.ExcessBurstCapacity < 0) != (r.ExcessBurstCapacity < 0)
	s.DesiredScale = r.DesiredPodCount
	s.ExcessBurstCapacity = r.ExcessBurstCapacity
	return changed
}

// NeedsPoke reports whether a stat calls for a decision at once rather than
// at the next tick: the decider last wanted zero pods and load arrived
// (Knative's MultiScaler.Poke, exactly; Autoscaler.Poke also decides for a
// decider with no recommendation yet).
func (s DeciderStatus) NeedsPoke(st Stat) bool {
	return s.DesiredScale == 0 && st.Concurrency != 0
}

// ScalerSpec is what the scaler applies around the decider: the revision's
// bounds and the scale-to-zero settings, resolved from config-autoscaler and
// the revision's annotations.
type ScalerSpec struct {
	// MinScale and MaxScale bound the applied scale; 0 means unbounded.
	// MinScale is 0 for an unreachable revision.
	MinScale, MaxScale int32
	// InitialScale is the scale a new revision starts at, and a floor until
	// it has first been ready at that scale.
	InitialScale int32
	// Reachable: some route sends traffic to the revision.
	Reachable         bool
	EnableScaleToZero bool
	// StableWindow is how long a revision is held at one pod after it went
	// active before it may be deactivated.
	StableWindow time.Duration
	// ScaleToZeroGracePeriod: the gateway must hold the revision's traffic
	// (Knative: the activator is in the path) this long before the last pod
	// goes. ScaleToZeroPodRetention: the revision must be inactive this long
	// (0 for an unreachable revision).
	ScaleToZeroGracePeriod  time.Duration
	ScaleToZeroPodRetention time.Duration
	// ActivationTimeout is how long a revision may stay activating before
	// it is given up on and scaled to zero: progress deadline + 30 s.
	ActivationTimeout time.Duration
}

// ActiveState is the PodAutoscaler's Active condition.
type ActiveState uint8

const (
	// Activating (Active=Unknown): waiting for pods to become ready.
	Activating ActiveState = iota
	// Active (Active=True): serving on ready pods.
	Active
	// Inactive (Active=False): scaled, or being scaled, to zero.
	Inactive
)

func (a ActiveState) String() string {
	switch a {
	case Active:
		return "Active"
	case Inactive:
		return "Inactive"
	}
	return "Activating"
}

// activeReason is the Active condition's reason. Knative restarts the
// condition's transition time when the status or the reason changes.
type activeReason uint8

const (
	reasonNone      activeReason = iota
	reasonQueued                 // Activating: "Queued"
	reasonNoTraffic              // Inactive: "NoTraffic"
	reasonTimedOut               // Inactive: "TimedOut"
)

// ScalerState is the part of a PodAutoscaler's status (and of its
// ServerlessService's) that the scaling rules depend on.
type ScalerState struct {
	// ActiveSince is the Active condition's last transition time.
	ActiveSince time.Time
	// BackedSince is when the activator last started backing the revision.
	BackedSince time.Time
	// DesiredScale is the PodAutoscaler's status.desiredScale, -1 unset.
	DesiredScale int32
	Active       ActiveState
	reason       activeReason
	// Initialized: the revision has once had its initial scale ready
	// (ScaleTargetInitialized); from then on InitialScale no longer applies.
	Initialized bool
	// Proxy is Knative's SKS mode: true for Proxy (requests go through the
	// activator), false for Serve (straight to the pods).
	Proxy bool
	// Backed: the activator backs the revision, because of the proxy mode
	// or because no pod is ready (the SKS's ActivatorEndpointsPopulated).
	Backed bool
}

// NewScalerState is the state of a PodAutoscaler created at now: activating,
// with its traffic through the activator.
func NewScalerState(now time.Time) ScalerState {
	return ScalerState{
		Active: Activating, ActiveSince: now,
		Proxy: true, Backed: true, BackedSince: now,
		DesiredScale: -1,
	}
}

// start is what Knative's first reconcile of a new PodAutoscaler does, before
// its ServerlessService exists: it computes the Active condition with an
// unknown scale and no ready pod, so a revision that needs no pod to be
// active (initial scale and min-scale both 0) starts Inactive, and any other
// stays Activating. The scale target is not initialized then (Knative waits
// for the SKS's service name).
func (s *ScalerState) start(now time.Time, spec ScalerSpec) {
	if max(spec.MinScale, spec.InitialScale) == 0 {
		s.mark(now, Inactive, reasonNoTraffic)
	}
}

// ScaleDecision is what a reconcile of the PodAutoscaler decides.
type ScaleDecision struct {
	// Want is the scale the reconciler settles on; -1 is unknown (no data
	// yet): leave the replicas as they are.
	Want int32
	// Apply: set the revision's replicas to Want. When false, the replicas
	// stay as they are, whatever Want says (Knative returns the scale without
	// patching the deployment, e.g. while it deactivates a revision).
	Apply bool
	// Proxy: requests go through the activator (the gateway holds them)
	// rather than straight to the pods (Knative's SKS Proxy/Serve mode).
	Proxy bool
	// Active is the Active condition after the reconcile.
	Active ActiveState
	// RequeueAfter is when Knative would reconcile again by itself (0: only
	// on the next change); a tick loop that reconciles every tick need not
	// act on it.
	RequeueAfter time.Duration
}

// deactivateRequeue is how soon Knative looks again at a PodAutoscaler it
// has just deactivated while its SKS is already in proxy mode.
const deactivateRequeue = 3 * time.Second

// Reconcile runs Knative's KPA reconciler (kpa.go ReconcileKind with
// scaler.go scale and handleScaleToZero) for one revision at now, given the
// decider's standing status and the ready pod count, and advances s.
//
// Where infera differs, for want of Kubernetes:
//   - The SKS and the activator probe are not there: the gateway is always in
//     the request path, so the activator probe always succeeds, and whether
//     the activator backs the revision (proxy mode, or no ready pod) is
//     recorded here (Backed, BackedSince) as it is decided, where Knative's
//     SKS reconciler reports it once the endpoints are programmed.
//   - Knative patches the deployment and can fail; here Apply is the answer.
//     The one decision that would always fail, applying the unknown scale -1
//     (a revision still activating with no metrics yet and no floor above 0),
//     is reported as Knative's failed reconcile: nothing applied, no status
//     change.
//   - Knative reconciles on events and re-enqueues itself (RequeueAfter);
//     here the owner calls Reconcile on each tick, which reaches the same
//     decisions at the first tick at or after the time Knative would.
func (s *ScalerState) Reconcile(now time.Time, spec ScalerSpec, dec DeciderStatus, readyPods int) ScaleDecision {
	want, apply, requeue := s.scale(now, spec, dec.DesiredScale)
	if apply && want < 0 {
		// Knative would patch replicas to -1, which the API server refuses:
		// the reconcile fails before the SKS and the status are touched.
		return ScaleDecision{Want: want, Proxy: s.Proxy, Active: s.Active, RequeueAfter: requeue}
	}

	// Requests go straight to the pods only when some are wanted and they
	// leave the burst capacity asked for.
	proxy := !(want > 0 && dec.ExcessBurstCapacity >= 0)
	s.Proxy = proxy
	if backed := proxy || readyPods == 0; backed != s.Backed {
		s.Backed, s.BackedSince = backed, now
	}

	s.computeStatus(now, spec, want, readyPods)
	return ScaleDecision{Want: want, Apply: apply, Proxy: proxy, Active: s.Active, RequeueAfter: requeue}
}

// scale is scaler.go's scale: bounds, initial scale, then scale to zero.
func (s *ScalerState) scale(now time.Time, spec ScalerSpec, desired int32) (int32, bool, time.Duration) {
	if desired < 0 && s.Active != Activating {
		return desired, false, 0 // no metrics yet: leave the scale alone
	}
	lo, hi := spec.MinScale, spec.MaxScale
	// Until the initial scale has been reached once, it is a floor, unless
	// the revision is unreachable (then it may go to zero at once).
	if spec.InitialScale > 1 && !s.Initialized && spec.Reachable {
		lo = max(lo, spec.InitialScale)
	}
	desired = applyBounds(lo, hi, desired)
	return s.handleScaleToZero(now, spec, desired)
}

func applyBounds(lo, hi, x int32) int32 {
	if x < lo {
		return lo
	}
	if hi != 0 && x > hi {
		return hi
	}
	return x
}

// handleScaleToZero decides whether a desired scale of 0 may be applied.
func (s *ScalerState) handleScaleToZero(now time.Time, spec ScalerSpec, desired int32) (int32, bool, time.Duration) {
	if desired != 0 {
		return desired, true, 0
	}
	if !spec.EnableScaleToZero {
		return 1, true, 0
	}
	in := now.Sub(s.ActiveSince)
	switch s.Active {
	case Activating:
		// Stuck activating past the deadline: give up and scale to zero.
		if in > spec.ActivationTimeout {
			return 0, true, 0
		}
		return -1, false, spec.ActivationTimeout
	case Active:
		// Deactivate (and then scale to zero) only after a stable window of
		// activity; until then keep one pod.
		if in >= spec.StableWindow {
			requeue := time.Duration(0)
			if s.Proxy {
				requeue = deactivateRequeue
			}
			return 0, false, requeue
		}
		return 1, true, spec.StableWindow - in
	default: // Inactive
		retention := spec.ScaleToZeroPodRetention
		if !spec.Reachable {
			retention = 0
		}
		if in >= max(spec.ScaleToZeroGracePeriod, retention) {
			return 0, true, 0
		}
		if retention > 0 && in < retention {
			return 0, false, retention - in
		}
		// The grace period counts from when the traffic went through the
		// activator, which may be before the revision went inactive.
		proxyFor := time.Duration(0)
		if s.Backed {
			proxyFor = now.Sub(s.BackedSince)
		}
		if wait := spec.ScaleToZeroGracePeriod - proxyFor; wait > 0 {
			return 0, false, wait
		}
		return 0, true, 0
	}
}

// computeStatus is kpa.go's computeStatus and computeActiveCondition.
func (s *ScalerState) computeStatus(now time.Time, spec ScalerSpec, want int32, ready int) {
	// The status keeps a known desired scale over a later unknown one.
	if !(want == -1 && s.DesiredScale >= 0) {
		s.DesiredScale = want
	}

	minReady := max(spec.MinScale, 1)
	if !s.Initialized {
		minReady = max(spec.MinScale, spec.InitialScale)
	}
	if ready >= int(minReady) {
		s.Initialized = true
	}
	switch {
	case want == 0 || minReady == 0:
		if s.Active == Activating && minReady > 0 {
			s.mark(now, Inactive, reasonTimedOut)
		} else {
			s.mark(now, Inactive, reasonNoTraffic)
		}
	case ready < int(minReady):
		if want > 0 || s.Active != Inactive {
			s.mark(now, Activating, reasonQueued)
		} else {
			s.mark(now, Inactive, reasonNoTraffic)
		}
	default:
		if want > 0 || s.Active != Inactive {
			s.mark(now, Active, reasonNone)
		}
	}
}

func (s *ScalerState) mark(now time.Time, a ActiveState, r activeReason) {
	if s.Active != a || s.reason != r {
		s.Active, s.reason, s.ActiveSince = a, r, now
	}
}
