package autoscaler

import (
	"testing"
	"time"
)

// step is one reconcile of a scripted PodAutoscaler: at second at, the
// decider stands at desired with burst capacity ebc, ready pods are ready.
type step struct {
	at      int
	desired int32
	ebc     int32
	ready   int
	// What Knative's KPA reconciler does.
	want   int32
	apply  bool
	active ActiveState
}

func TestScalerReconcile(t *testing.T) {
	base := ScalerSpec{
		MaxScale: 0, InitialScale: 1, Reachable: true, EnableScaleToZero: true,
		StableWindow: 60 * time.Second, ScaleToZeroGracePeriod: 30 * time.Second,
		ActivationTimeout: 630 * time.Second,
	}
	with := func(f func(*ScalerSpec)) ScalerSpec { s := base; f(&s); return s }
	tests := []struct {
		name  string
		spec  ScalerSpec
		steps []step
	}{
		{"scale to zero: stable window active, then the grace period", base, []step{
			{at: 0, desired: -1, ebc: -111, ready: 0, want: -1, apply: false, active: Activating},
			{at: 2, desired: 1, ebc: 10, ready: 1, want: 1, apply: true, active: Active},
			// The decider wants 0 before the PA has been active a stable window: hold 1.
			{at: 40, desired: 0, ebc: 10, ready: 1, want: 1, apply: true, active: Active},
			{at: 61, desired: 0, ebc: 10, ready: 1, want: 1, apply: true, active: Active},
			// Active for 62 s >= 60 s: deactivate, keep the pod.
			{at: 62, desired: 0, ebc: 10, ready: 1, want: 0, apply: false, active: Inactive},
			// Backed by the gateway since 62: wait out the 30 s grace.
			{at: 90, desired: 0, ebc: 10, ready: 1, want: 0, apply: false, active: Inactive},
			{at: 92, desired: 0, ebc: 10, ready: 1, want: 0, apply: true, active: Inactive},
			// Back from zero: activating until a pod is ready.
			{at: 300, desired: 1, ebc: -111, ready: 0, want: 1, apply: true, active: Activating},
			{at: 305, desired: 1, ebc: -111, ready: 1, want: 1, apply: true, active: Active},
		}},
		{"pod retention longer than the grace period", with(func(s *ScalerSpec) { s.ScaleToZeroPodRetention = 50 * time.Second }), []step{
			{at: 0, desired: 1, ebc: 10, ready: 1, want: 1, apply: true, active: Active},
			{at: 60, desired: 0, ebc: 10, ready: 1, want: 0, apply: false, active: Inactive},
			{at: 100, desired: 0, ebc: 10, ready: 1, want: 0, apply: false, active: Inactive},
			{at: 110, desired: 0, ebc: 10, ready: 1, want: 0, apply: true, active: Inactive},
		}},
		{"retention shorter than the grace, activator in path all along: fast path", with(func(s *ScalerSpec) {
			s.ScaleToZeroPodRetention = 10 * time.Second
		}), []step{
			{at: 0, desired: 1, ebc: -1, ready: 1, want: 1, apply: true, active: Active},
			{at: 60, desired: 0, ebc: -1, ready: 1, want: 0, apply: false, active: Inactive},
			{at: 68, desired: 0, ebc: -1, ready: 1, want: 0, apply: false, active: Inactive},
			// Retention passed and proxied for 70 s >= 30 s grace.
			{at: 70, desired: 0, ebc: -1, ready: 1, want: 0, apply: true, active: Inactive},
		}},
		{"enable-scale-to-zero false keeps one pod", with(func(s *ScalerSpec) { s.EnableScaleToZero = false }), []step{
			{at: 0, desired: 1, ebc: 10, ready: 1, want: 1, apply: true, active: Active},
			{at: 100, desired: 0, ebc: 10, ready: 1, want: 1, apply: true, active: Active},
			{at: 1000, desired: 0, ebc: 10, ready: 1, want: 1, apply: true, active: Active},
		}},
		{"min and max scale", with(func(s *ScalerSpec) { s.MinScale, s.MaxScale = 2, 4 }), []step{
			{at: 0, desired: -1, ebc: -1, ready: 0, want: 2, apply: true, active: Activating},
			{at: 2, desired: 0, ebc: -1, ready: 2, want: 2, apply: true, active: Active},
			{at: 4, desired: 9, ebc: -1, ready: 2, want: 4, apply: true, active: Active},
			{at: 500, desired: 0, ebc: -1, ready: 4, want: 2, apply: true, active: Active},
		}},
		{"initial scale is a floor until first reached", with(func(s *ScalerSpec) { s.InitialScale = 3 }), []step{
			{at: 0, desired: 1, ebc: 10, ready: 1, want: 3, apply: true, active: Activating},
			{at: 2, desired: 1, ebc: 10, ready: 2, want: 3, apply: true, active: Activating},
			{at: 4, desired: 1, ebc: 10, ready: 3, want: 3, apply: true, active: Active},
			{at: 6, desired: 1, ebc: 10, ready: 3, want: 1, apply: true, active: Active},
		}},
		{"initial scale ignored when unreachable", with(func(s *ScalerSpec) { s.InitialScale, s.Reachable = 3, false }), []step{
			{at: 0, desired: 1, ebc: 10, ready: 0, want: 1, apply: true, active: Activating},
		}},
		{"unreachable: no pod retention", with(func(s *ScalerSpec) {
			s.Reachable, s.ScaleToZeroPodRetention, s.ScaleToZeroGracePeriod = false, 100*time.Second, 0
		}), []step{
			{at: 0, desired: 1, ebc: 10, ready: 1, want: 1, apply: true, active: Active},
			{at: 60, desired: 0, ebc: 10, ready: 1, want: 0, apply: false, active: Inactive},
			{at: 62, desired: 0, ebc: 10, ready: 1, want: 0, apply: true, active: Inactive},
		}},
		{"activation timeout: scaled to zero, TimedOut", base, []step{
			{at: 0, desired: -1, ebc: -111, ready: 0, want: -1, apply: false, active: Activating},
			{at: 10, desired: 0, ebc: -111, ready: 0, want: -1, apply: false, active: Activating},
			{at: 630, desired: 0, ebc: -111, ready: 0, want: -1, apply: false, active: Activating},
			{at: 631, desired: 0, ebc: -111, ready: 0, want: 0, apply: true, active: Inactive},
		}},
		{"initial scale 0 starts inactive and waits for load", with(func(s *ScalerSpec) { s.InitialScale = 0 }), []step{
			{at: 0, desired: -1, ebc: -111, ready: 0, want: -1, apply: false, active: Inactive},
			{at: 2, desired: -1, ebc: -111, ready: 0, want: -1, apply: false, active: Inactive},
			{at: 4, desired: 1, ebc: -111, ready: 0, want: 1, apply: true, active: Activating},
			{at: 8, desired: 1, ebc: -111, ready: 1, want: 1, apply: true, active: Active},
		}},
	}
	t0 := time.Unix(1_700_000_000, 0)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := NewScalerState(t0)
			s.start(t0, tc.spec)
			for _, st := range tc.steps {
				now := t0.Add(time.Duration(st.at) * time.Second)
				got := s.Reconcile(now, tc.spec, DeciderStatus{DesiredScale: st.desired, ExcessBurstCapacity: st.ebc}, st.ready)
				if got.Want != st.want || got.Apply != st.apply || got.Active != st.active {
					t.Fatalf("at %ds (desired %d, ready %d): want %d apply %v %v; Knative: %d %v %v",
						st.at, st.desired, st.ready, got.Want, got.Apply, got.Active, st.want, st.apply, st.active)
				}
				if wantProxy := !(got.Want > 0 && st.ebc >= 0); got.Proxy != wantProxy {
					t.Fatalf("at %ds: proxy %v, want %v", st.at, got.Proxy, wantProxy)
				}
			}
		})
	}
}
