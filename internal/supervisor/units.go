package supervisor

import (
	"errors"
	"slices"
	"time"

	"github.com/infera-dev/infera/internal/ack"
	"github.com/infera-dev/infera/internal/placement"
	"github.com/infera-dev/infera/internal/workload"
)

// UnitsFunc is the ResourcePolicy that covers a revision (nil: none), its key and the
// capacity pools its units fill.
type UnitsFunc func(rev workload.Revision) (policy *ack.ResourcePolicySpec, key string, pools []placement.Pool)

// unitPlacementsLocked is every live replica placed under the policy key, for ChooseUnit and
// ScaleInOrder.
func (s *Supervisor) unitPlacementsLocked(key string) []placement.UnitPlacement {
	var out []placement.UnitPlacement
	for _, r := range s.byName {
		if r.policy != key || r.unit < 0 {
			continue
		}
		out = append(out, placement.UnitPlacement{
			Replica: r.name, Revision: string(r.rev.ID), Unit: r.unit, Pool: r.pool, Labels: r.rev.Labels,
			Terminating: r.stopping, Created: r.created,
			GPUMemGiB: r.rev.Container.GPUMemGiB, WholeGPUs: r.rev.Container.GPUs,
			CPUMilli: r.rev.Container.Resources.CPURequestMilli, MemoryBytes: r.rev.Container.Resources.MemoryLimit,
		})
	}
	slices.SortFunc(out, func(a, b placement.UnitPlacement) int { return a.Created.Compare(b.Created) })
	return out
}

// placeUnit places a replica covered by a ResourcePolicy: the unit (and pool) it goes to,
// in the policy's order up to each unit's max, with whenTryNextUnits deciding when the next
// may take it, and its GPUs within that pool. While no unit takes it, the replica is Pending
// (Unschedulable, each unit's reason) and looks again when capacity frees, every
// placeRetry, or at the policy's timeout. It returns false when the replica is stopped
// first.
func (r *replica) placeUnit(policy *ack.ResourcePolicySpec, key string, pools []placement.Pool) bool {
	s := r.s
	var pendingSince time.Time
	for {
		s.mu.Lock()
		if r.stopping || s.closed {
			s.mu.Unlock()
			return false
		}
		now := s.clock.Now()
		if pendingSince.IsZero() {
			pendingSince = now
		}
		held := s.heldLocked()
		req := placement.UnitRequest{Request: gpuRequest(r.name, r.rev), Labels: r.rev.Labels,
			CPUMilli: r.rev.Container.Resources.CPURequestMilli, MemoryBytes: r.rev.Container.Resources.MemoryLimit}
		placed := s.unitPlacementsLocked(key)
		// What each pool holds: the cpu requests and memory limits of the replicas in it.
		used := map[string]placement.Usage{}
		for _, p := range placed {
			if !p.Terminating {
				u := used[p.Pool]
				u.CPUMilli += p.CPUMilli
				u.MemoryBytes += p.MemoryBytes
				used[p.Pool] = u
			}
		}
		c, err := placement.ChooseUnit(*policy, placement.Capacity{Pools: pools, Used: used, GPUs: s.cfg.GPUs, Reserved: held},
			placed, req, now, pendingSince)
		if err == nil {
			r.policy, r.unit, r.pool = key, c.Unit, c.Pool
			if len(c.GPU.Reservations) > 0 {
				s.gpuRes[r.name] = c.GPU.Reservations
				p := c.GPU
				r.gpu = &p
			}
			r.message, r.reason = "", ""
			if r.state == Pending {
				r.state = Starting
			}
			r.rs.unschedulable = ""
			s.mu.Unlock()
			s.log.Info("replica placed in a unit", "revision", string(r.rev.ID), "replica", r.name, "policy", key, "unit", c.Unit, "pool", c.Pool)
			s.changed(r.rev.ID)
			return true
		}
		freed := s.gpuFreed
		wait := placeRetry
		var un *placement.Unschedulable
		if errors.As(err, &un) && !un.RetryAt.IsZero() {
			wait = max(min(wait, un.RetryAt.Sub(now)), time.Millisecond)
		}
		r.state, r.reason, r.message = Pending, ReasonUnschedulable, err.Error()
		r.rs.unschedulable = err.Error()
		s.mu.Unlock()
		s.changed(r.rev.ID)
		if !r.waitPlacement(freed, wait) {
			return false
		}
	}
}

// unitOrder reorders scale-down candidates of a revision under a ResourcePolicy: replicas
// not ready first, then ScaleInOrder (the last unit first, the newest first within a unit).
// Called with s.mu held; nil when none of them is in a unit.
func (s *Supervisor) unitOrderLocked(active []*replica) map[string]int {
	key := ""
	for _, r := range active {
		if r.unit >= 0 {
			key = r.policy
			break
		}
	}
	if key == "" {
		return nil
	}
	order := map[string]int{}
	for i, name := range placement.ScaleInOrder(s.unitPlacementsLocked(key)) {
		order[name] = i
	}
	return order
}
