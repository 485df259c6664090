package platform

import (
	"maps"
	"time"

	"github.com/infera-dev/infera/internal/autoscaler"
	"github.com/infera-dev/infera/internal/workload"
)

// kpa is Knative's autoscaler (internal/autoscaler) behind the controller's Scaler interface.
type kpa struct {
	a    *autoscaler.Autoscaler
	data map[string]string // config-autoscaler in effect
}

func newKPA() *kpa { return &kpa{a: autoscaler.New(nil), data: map[string]string{}} }

func decisionOf(d autoscaler.Decision) Decision {
	return Decision{
		Desired: d.Desired, DeciderDesired: d.DeciderDesired, Panic: d.Panic, ActivatorInPath: d.ActivatorInPath,
		ExcessBurstCapacity: d.ExcessBurstCapacity, StableConcurrency: d.StableConcurrency,
		PanicConcurrency: d.PanicConcurrency, Target: d.Target,
	}
}

func (k *kpa) Upsert(now time.Time, rev workload.Revision) (Decision, error) {
	if err := k.a.Upsert(now, rev.ID, rev.Annotations, rev.ContainerConcurrency); err != nil {
		return Decision{}, err
	}
	d, _ := k.a.Decision(rev.ID)
	return decisionOf(d), nil
}

func (k *kpa) Remove(id workload.RevisionID) { k.a.Remove(id) }
func (k *kpa) Record(s workload.Stat)        { k.a.Record(s) }

func (k *kpa) Tick(now time.Time, ready map[workload.RevisionID]int) map[workload.RevisionID]Decision {
	out := map[workload.RevisionID]Decision{}
	for id, d := range k.a.Tick(now, ready) {
		out[id] = decisionOf(d)
	}
	return out
}

func (k *kpa) Poke(now time.Time, id workload.RevisionID) (Decision, bool) {
	d, ok := k.a.Poke(now, id)
	return decisionOf(d), ok
}

// SetConfig applies config-autoscaler's data when it changed.
func (k *kpa) SetConfig(now time.Time, data map[string]string) error {
	if maps.Equal(k.data, data) {
		return nil
	}
	cc, err := autoscaler.ParseClusterConfig(data)
	if err != nil {
		return err
	}
	if err := k.a.SetConfig(now, cc); err != nil {
		return err
	}
	k.data = maps.Clone(data)
	return nil
}
