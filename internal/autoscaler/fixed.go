package autoscaler

import (
	"fmt"
	"time"

	"github.com/infera-dev/infera/internal/workload"
)

// Fixed is the scaling policy of runs that ask for no autoscaling (`infera up
// --autoscaler=fixed`): each revision runs max(initial scale, min-scale) replicas, capped by
// max-scale, read with Knative's own rules (annotations over config-autoscaler's initial-scale
// and allow-zero-initial-scale), and one replica once a request arrives for a revision at zero.
// It has no notion of load. It has the Autoscaler's method set, so the controller drives
// either one.
type Fixed struct {
	cc   *ClusterConfig
	revs map[workload.RevisionID]fixedRev
}

type fixedRev struct {
	annotations map[string]string
	cc          int
	desired     int
}

// NewFixed returns a Fixed policy under config-autoscaler cc (nil: Knative's defaults).
func NewFixed(cc *ClusterConfig) *Fixed {
	if cc == nil {
		cc = DefaultClusterConfig()
	}
	return &Fixed{cc: cc, revs: map[workload.RevisionID]fixedRev{}}
}

// Upsert starts or updates a revision; the error wraps ErrInvalidAnnotations.
func (f *Fixed) Upsert(_ time.Time, id workload.RevisionID, annotations map[string]string, containerConcurrency int) error {
	n, err := f.scale(annotations, containerConcurrency)
	if err != nil {
		return fmt.Errorf("%w (revision %s)", err, id)
	}
	if old, ok := f.revs[id]; ok && old.desired > n {
		n = old.desired // a replica brought by a request stays
	}
	f.revs[id] = fixedRev{annotations: annotations, cc: containerConcurrency, desired: n}
	return nil
}

func (f *Fixed) scale(annotations map[string]string, containerConcurrency int) (int, error) {
	cfg, err := NewConfig(f.cc, RevisionParams{Annotations: annotations, ContainerConcurrency: int64(containerConcurrency), Reachable: true})
	if err != nil {
		return 0, err
	}
	n := max(int(cfg.Scaler.InitialScale), int(cfg.Scaler.MinScale))
	if m := int(cfg.Scaler.MaxScale); m > 0 {
		n = min(n, m)
	}
	return n, nil
}

// SetConfig re-reads every revision under config-autoscaler cc.
func (f *Fixed) SetConfig(_ time.Time, cc *ClusterConfig) error {
	next := make(map[workload.RevisionID]fixedRev, len(f.revs))
	old := f.cc
	f.cc = cc
	for id, r := range f.revs {
		n, err := f.scale(r.annotations, r.cc)
		if err != nil {
			f.cc = old
			return fmt.Errorf("%w (revision %s)", err, id)
		}
		r.desired = n
		next[id] = r
	}
	f.revs = next
	return nil
}

func (f *Fixed) decision(n int) Decision {
	return Decision{Desired: n, DeciderDesired: n, ActivatorInPath: true, Ready: n}
}

// Decision is the revision's standing replica count.
func (f *Fixed) Decision(id workload.RevisionID) (Decision, bool) {
	r, ok := f.revs[id]
	return f.decision(r.desired), ok
}

func (f *Fixed) Remove(id workload.RevisionID) { delete(f.revs, id) }
func (f *Fixed) Record(workload.Stat)          {}

// Tick decides nothing: the count changes only on Upsert and Poke.
func (f *Fixed) Tick(time.Time, map[workload.RevisionID]int) map[workload.RevisionID]Decision {
	return nil
}

// Poke brings a revision at zero to one replica when st, the gateway's stat for a request
// that found no ready replica, carries one.
func (f *Fixed) Poke(_ time.Time, st workload.Stat, _ int) (Decision, bool) {
	id := st.Revision
	r, ok := f.revs[id]
	if !ok || r.desired > 0 || st.Concurrency == 0 {
		return Decision{}, false
	}
	r.desired = 1
	f.revs[id] = r
	return f.decision(1), true
}
