package platform

import (
	"fmt"
	"strconv"
	"time"

	"github.com/infera-dev/infera/internal/workload"
)

// Knative's scale-bound annotations.
const (
	annMinScale     = "autoscaling.knative.dev/min-scale"
	annInitialScale = "autoscaling.knative.dev/initial-scale"
)

// FixedScaler runs max(initial-scale, min-scale) replicas per revision (initial-scale defaults to
// config-autoscaler's, 1), and one replica once a request arrives for a revision at zero. It is
// the scaling policy for runs that ask for no autoscaling (`infera up --autoscaler=fixed`) and
// has no notion of load.
type FixedScaler struct {
	InitialScale int // config-autoscaler initial-scale
	desired      map[workload.RevisionID]int
}

// NewFixedScaler returns a FixedScaler with Knative's default initial scale.
func NewFixedScaler() *FixedScaler {
	return &FixedScaler{InitialScale: 1, desired: map[workload.RevisionID]int{}}
}

func (f *FixedScaler) Upsert(_ time.Time, rev workload.Revision) (Decision, error) {
	n := f.InitialScale
	for _, a := range []string{annInitialScale, annMinScale} {
		v, ok := rev.Annotations[a]
		if !ok {
			continue
		}
		m, err := strconv.Atoi(v)
		if err != nil || m < 0 {
			return Decision{}, fmt.Errorf("annotation %s: %q is not a non-negative integer", a, v)
		}
		if a == annInitialScale {
			n = m
		} else {
			n = max(n, m)
		}
	}
	f.desired[rev.ID] = n
	return Decision{Desired: n, DeciderDesired: n, ActivatorInPath: true}, nil
}

func (f *FixedScaler) Remove(id workload.RevisionID) { delete(f.desired, id) }
func (f *FixedScaler) Record(workload.Stat)          {}

func (f *FixedScaler) Tick(time.Time, map[workload.RevisionID]int) map[workload.RevisionID]Decision {
	return nil
}

func (f *FixedScaler) Poke(_ time.Time, id workload.RevisionID) (Decision, bool) {
	n, ok := f.desired[id]
	if !ok || n > 0 {
		return Decision{}, false
	}
	f.desired[id] = 1
	return Decision{Desired: 1, DeciderDesired: 1, ActivatorInPath: true}, true
}
