package placement

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/infera-dev/infera/internal/ack"
)

// Pool kinds: an ecs pool is capacity infera owns on the machine; the eci pool is the
// elastic capacity for bursts.
const (
	KindECS = "ecs"
	KindECI = "eci"
)

// WaitForECSScalingLabel in a unit's podLabels makes TimeoutOrExceedMax wait in a unit
// without max; ACK does not put it on the pod.
const WaitForECSScalingLabel = "k8s.aliyun.com/resource-policy-wait-for-ecs-scaling"

// Resource names maxResources is counted in; others are accepted and inert.
const (
	ResourceCPU    = "cpu"
	ResourceMemory = "memory"
	ResourceGPUMem = "aliyun.com/gpu-mem"
	ResourceGPU    = "nvidia.com/gpu"
)

// Pool is one set of local capacity a unit's nodeSelector can pick, as a node pool is on
// ACK.
type Pool struct {
	Name   string
	Labels map[string]string // what units' nodeSelectors match
	Kind   string            // KindECS or KindECI
	GPUs   []int             // the GPU indices that belong to the pool
	// CPUMilli and MemoryBytes are the pool's capacity; 0: unbounded.
	CPUMilli, MemoryBytes int64
}

// Usage is what is requested from a pool.
type Usage struct {
	CPUMilli, MemoryBytes int64
}

// Capacity is the machine as unit choice sees it.
type Capacity struct {
	Pools []Pool           // in the order a unit tries the pools it matches
	Used  map[string]Usage // by pool name: requests of every replica in the pool
	// GPUs, Reserved and Candidates are Place's and Victims' inputs, for all pools.
	GPUs       []GPU
	Reserved   []Reservation
	Candidates []Candidate
}

// UnitRequest is a replica to place under a ResourcePolicy.
type UnitRequest struct {
	Request                                 // its GPU limits, replica and revision
	Labels                map[string]string // its labels, for matchLabelKeys
	CPUMilli, MemoryBytes int64             // its cpu and memory requests
}

// UnitPlacement is a replica the policy selects that is already placed.
type UnitPlacement struct {
	Replica  string
	Revision string
	Unit     int // index in the policy's units; -1 when in none of them
	Pool     string
	Labels   map[string]string
	// Terminating: draining or stopping, not yet gone.
	Terminating bool
	// Previous: placed before the policy existed (ignorePreviousPod).
	Previous bool
	Created  time.Time
	// Its requests, counted against the unit's maxResources.
	CPUMilli, MemoryBytes int64
	GPUMemGiB, WholeGPUs  int
}

// Choice is where ChooseUnit puts a replica.
type Choice struct {
	Unit int    // index in the policy's units
	Pool string // the pool of the unit it fits in
	GPU  Placement
	// Evict lists the replicas to stop first (least recently used first): the hand-off
	// that stands in for ACK's preemption. nil when it fits as is.
	Evict []string
	// Labels and Annotations are the unit's podLabels and podAnnotations, to put on the
	// replica (without WaitForECSScalingLabel); nil when the unit has none.
	Labels, Annotations map[string]string
}

// Unschedulable is ChooseUnit's error: the replica stays pending.
type Unschedulable struct {
	Replica string
	Reasons []string // one per unit tried, in order
	// Waiting is the unit the replica waits in under its whenTryNextUnits policy; -1 when
	// it tried every unit.
	Waiting int
	// RetryAt, when set, is when TimeoutOrExceedMax lets it move past Waiting: ask again
	// then even if nothing else changed.
	RetryAt time.Time
}

func (e *Unschedulable) Error() string {
	return fmt.Sprintf("no unit takes replica %s: %s", e.Replica, strings.Join(e.Reasons, "; "))
}

// Unwrap makes errors.Is(err, ErrNoUnit) hold.
func (e *Unschedulable) Unwrap() error { return ErrNoUnit }

// options are the policy's knobs with ACK's defaults applied.
type options struct {
	next              ack.TryNextPolicy
	timeout           time.Duration
	ignoreTerminating bool
	ignorePrevious    bool
	beforeNextUnit    bool
}

func optionsOf(s ack.ResourcePolicySpec) options {
	o := options{next: s.WhenTryNextUnits.Policy, timeout: ack.DefaultTryNextTimeout, ignoreTerminating: true,
		beforeNextUnit: s.PreemptPolicy == ack.PreemptBeforeNextUnit}
	switch o.next {
	case "":
		o.next = ack.LackResourceOrExceedMax
	case ack.LackResourceAndNoterminating:
		o.next = ack.LackResourceAndNoTerminating
	case ack.Timeout:
		o.next = ack.TimeoutOrExceedMax
	}
	if t := s.WhenTryNextUnits.Timeout; t != nil && t.Duration > 0 {
		o.timeout = t.Duration
	}
	if s.IgnoreTerminatingPod != nil {
		o.ignoreTerminating = *s.IgnoreTerminatingPod
	}
	if s.IgnorePreviousPod != nil {
		o.ignorePrevious = *s.IgnorePreviousPod
	}
	return o
}

// ChooseUnit picks the unit and pool for req, ACK's custom elastic resource priority
// scheduling on one machine. Units are tried in order. A unit whose max (or maxResources)
// is reached by the replicas it counts is passed over; otherwise the replica goes to the
// first of the unit's pools (same kind, nodeSelector matching the pool's labels) with
// room for its cpu, memory and GPU request. When none has room, whenTryNextUnits.policy
// says whether it may try the next unit:
//   - LackResourceOrExceedMax (the default): yes;
//   - ExceedMax: only if the unit sets neither max nor maxResources, else it waits there;
//   - TimeoutOrExceedMax (and the CRD's Timeout): it waits in a unit that sets max or
//     maxResources, or carries WaitForECSScalingLabel, until timeout (15 minutes by
//     default) after pendingSince, then moves on; RetryAt says when;
//   - LackResourceAndNoTerminating: only if none of the unit's replicas is terminating —
//     also when the unit is full — so a rolling update does not spill over.
//
// Counting for max: replicas of the unit other than req, without the terminating ones
// (ignoreTerminatingPod, default true), without those placed before the policy
// (ignorePreviousPod, default false), and, with matchLabelKeys, only those whose values
// of those labels equal req's (a req missing one is rejected with ErrMissingLabel).
//
// Preemption is the GPU hand-off: where a pool has the cpu and memory but not the GPU
// memory, Victims may free it from idle replicas. preemptPolicy BeforeNextUnit tries that
// in each unit before moving on; AfterAllUnits (the default) only once no unit took the
// replica, in the units it tried, in order. now and pendingSince (zero: now) are only read
// for the timeout.
func ChooseUnit(policy ack.ResourcePolicySpec, c Capacity, placed []UnitPlacement, req UnitRequest, now, pendingSince time.Time) (Choice, error) {
	if err := req.Request.validate(); err != nil {
		return Choice{}, err
	}
	for _, k := range policy.MatchLabelKeys {
		if _, ok := req.Labels[k]; !ok {
			return Choice{}, fmt.Errorf("%w: replica %s has no label %q", ErrMissingLabel, req.Replica, k)
		}
	}
	if pendingSince.IsZero() {
		pendingSince = now
	}
	o := optionsOf(policy)
	counted := func(p *UnitPlacement) bool {
		if p.Replica == req.Replica || (o.ignoreTerminating && p.Terminating) || (o.ignorePrevious && p.Previous) {
			return false
		}
		for _, k := range policy.MatchLabelKeys {
			if p.Labels[k] != req.Labels[k] {
				return false
			}
		}
		return true
	}

	e := &Unschedulable{Replica: req.Replica, Waiting: -1}
	var tried []int
	for i := range policy.Units {
		u := &policy.Units[i]
		name := fmt.Sprintf("unit %d (%s)", i, u.Resource)
		var n, terminating int
		var sum unitSum
		for j := range placed {
			p := &placed[j]
			if p.Unit != i {
				continue
			}
			if p.Terminating && p.Replica != req.Replica {
				terminating++
			}
			if counted(p) {
				n++
				sum.add(p)
			}
		}
		capped := u.Max != nil || len(u.MaxResources) > 0
		if full := exceeds(u, n, sum, req); full != "" {
			if o.next == ack.LackResourceAndNoTerminating && terminating > 0 {
				e.Reasons = append(e.Reasons, fmt.Sprintf("%s: %s, waiting: %d replicas terminating (%s)", name, full, terminating, o.next))
				e.Waiting = i
				break
			}
			e.Reasons = append(e.Reasons, name+": "+full)
			continue
		}
		pools := poolsOf(u, c.Pools)
		if len(pools) == 0 {
			e.Reasons = append(e.Reasons, fmt.Sprintf("%s: no %s pool matches nodeSelector %s", name, poolKind(u.Resource), selectorString(u.NodeSelector)))
		} else {
			var lack []string
			for _, pl := range pools {
				gp, why := fit(pl, c, req)
				if why == "" {
					return choice(i, pl, gp, nil, u), nil
				}
				lack = append(lack, fmt.Sprintf("pool %s: %s", pl.Name, why))
			}
			e.Reasons = append(e.Reasons, name+": "+strings.Join(lack, ", "))
		}
		tried = append(tried, i)
		if o.beforeNextUnit {
			if ch, ok := handOff(i, u, pools, c, req); ok {
				return ch, nil
			}
		}
		wait := ""
		switch o.next {
		case ack.ExceedMax:
			if capped {
				wait = fmt.Sprintf("waiting below max (%s)", o.next)
			}
		case ack.TimeoutOrExceedMax:
			if capped || u.PodLabels[WaitForECSScalingLabel] == "true" {
				if deadline := pendingSince.Add(o.timeout); now.Before(deadline) {
					wait = fmt.Sprintf("waiting until %s (%s, timeout %s)", deadline.UTC().Format(time.RFC3339), o.next, o.timeout)
					e.RetryAt = deadline
				} else {
					e.Reasons[len(e.Reasons)-1] += fmt.Sprintf(", timeout %s passed", o.timeout)
				}
			}
		case ack.LackResourceAndNoTerminating:
			if terminating > 0 {
				wait = fmt.Sprintf("waiting: %d replicas terminating (%s)", terminating, o.next)
			}
		}
		if wait != "" {
			e.Reasons[len(e.Reasons)-1] += ", " + wait
			e.Waiting = i
			break
		}
	}
	if !o.beforeNextUnit {
		for _, i := range tried {
			u := &policy.Units[i]
			if ch, ok := handOff(i, u, poolsOf(u, c.Pools), c, req); ok {
				return ch, nil
			}
		}
	}
	if len(policy.Units) == 0 {
		e.Reasons = append(e.Reasons, "the policy has no units")
	}
	return Choice{}, e
}

func choice(i int, pl *Pool, gp Placement, evict []string, u *ack.Unit) Choice {
	ch := Choice{Unit: i, Pool: pl.Name, GPU: gp, Evict: evict}
	if len(u.PodLabels) > 0 {
		ch.Labels = maps.Clone(u.PodLabels)
		delete(ch.Labels, WaitForECSScalingLabel)
		if len(ch.Labels) == 0 {
			ch.Labels = nil
		}
	}
	if len(u.PodAnnotations) > 0 {
		ch.Annotations = maps.Clone(u.PodAnnotations)
	}
	return ch
}

// unitSum is what the counted replicas of a unit request.
type unitSum struct {
	cpuMilli, memory int64
	gpuMem, gpus     int64
}

func (s *unitSum) add(p *UnitPlacement) {
	s.cpuMilli += p.CPUMilli
	s.memory += p.MemoryBytes
	s.gpuMem += int64(p.GPUMemGiB)
	s.gpus += int64(p.WholeGPUs)
}

// exceeds says why req would take the unit past max or maxResources; "" when it would not.
func exceeds(u *ack.Unit, n int, sum unitSum, req UnitRequest) string {
	if u.Max != nil && n >= int(*u.Max) {
		return fmt.Sprintf("max %d reached (%d replicas)", *u.Max, n)
	}
	for _, name := range slices.Sorted(maps.Keys(u.MaxResources)) {
		q := u.MaxResources[name]
		var used, asked, limit int64
		var format resource.Format = resource.DecimalSI
		switch name {
		case ResourceCPU:
			used, asked, limit = sum.cpuMilli, req.CPUMilli, q.MilliValue()
		case ResourceMemory:
			used, asked, limit, format = sum.memory, req.MemoryBytes, q.Value(), resource.BinarySI
		case ResourceGPUMem:
			used, asked, limit = sum.gpuMem, int64(req.GPUMemGiB), q.Value()
		case ResourceGPU:
			used, asked, limit = sum.gpus, int64(req.WholeGPUs), q.Value()
		default:
			continue
		}
		if used+asked > limit {
			show := func(v int64) string {
				if name == ResourceCPU {
					return resource.NewMilliQuantity(v, format).String()
				}
				return resource.NewQuantity(v, format).String()
			}
			return fmt.Sprintf("maxResources %s reached (%s used + %s asked > %s)", name, show(used), show(asked), q.String())
		}
	}
	return ""
}

// poolKind is the pool kind a unit's resource type draws on: ecs (and the deprecated
// elastic, node pools that scale) on ecs pools; eci and acs (serverless) on eci pools.
func poolKind(r ack.ResourceType) string {
	switch r {
	case ack.ResourceECS, ack.ResourceElastic:
		return KindECS
	case ack.ResourceECI, ack.ResourceACS:
		return KindECI
	}
	return string(r)
}

func poolsOf(u *ack.Unit, pools []Pool) []*Pool {
	kind := poolKind(u.Resource)
	var out []*Pool
	for i := range pools {
		p := &pools[i]
		if p.Kind != kind {
			continue
		}
		ok := true
		for k, v := range u.NodeSelector {
			if pv, has := p.Labels[k]; !has || pv != v {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, p)
		}
	}
	return out
}

func selectorString(sel map[string]string) string {
	if len(sel) == 0 {
		return "{}"
	}
	parts := make([]string, 0, len(sel))
	for _, k := range slices.Sorted(maps.Keys(sel)) {
		parts = append(parts, k+"="+sel[k])
	}
	return strings.Join(parts, ",")
}

// fit places req in the pool: its GPU placement, or why it does not fit.
func fit(pl *Pool, c Capacity, req UnitRequest) (Placement, string) {
	if why := cpuMemory(pl, c, req); why != "" {
		return Placement{}, why
	}
	if req.Empty() {
		return Placement{Replica: req.Replica, Revision: req.Revision}, ""
	}
	inv := poolGPUs(pl, c.GPUs)
	if len(inv) == 0 {
		return Placement{}, "no GPUs"
	}
	gp, err := Place(inv, c.Reserved, req.Request)
	if err != nil {
		return Placement{}, err.Error()
	}
	return gp, ""
}

func cpuMemory(pl *Pool, c Capacity, req UnitRequest) string {
	used := c.Used[pl.Name]
	if pl.CPUMilli > 0 && used.CPUMilli+req.CPUMilli > pl.CPUMilli {
		return fmt.Sprintf("cpu %dm used + %dm asked > %dm", used.CPUMilli, req.CPUMilli, pl.CPUMilli)
	}
	if pl.MemoryBytes > 0 && used.MemoryBytes+req.MemoryBytes > pl.MemoryBytes {
		return fmt.Sprintf("memory %s used + %s asked > %s", resource.NewQuantity(used.MemoryBytes, resource.BinarySI),
			resource.NewQuantity(req.MemoryBytes, resource.BinarySI), resource.NewQuantity(pl.MemoryBytes, resource.BinarySI))
	}
	return ""
}

func poolGPUs(pl *Pool, all []GPU) []GPU {
	var inv []GPU
	for _, g := range all {
		if slices.Contains(pl.GPUs, g.Index) {
			inv = append(inv, g)
		}
	}
	return inv
}

// handOff looks for the fewest idle replicas whose GPU memory, once handed over, lets req
// into one of the unit's pools that has its cpu and memory; ties go to the pool first in
// order.
func handOff(i int, u *ack.Unit, pools []*Pool, c Capacity, req UnitRequest) (Choice, bool) {
	if req.Empty() {
		return Choice{}, false
	}
	var best Choice
	found := false
	for _, pl := range pools {
		if cpuMemory(pl, c, req) != "" {
			continue
		}
		inv := poolGPUs(pl, c.GPUs)
		evict, err := Victims(inv, c.Reserved, req.Request, c.Candidates)
		if err != nil || len(evict) == 0 || (found && len(evict) >= len(best.Evict)) {
			continue
		}
		left := slices.DeleteFunc(slices.Clone(c.Reserved), func(r Reservation) bool { return slices.Contains(evict, r.Replica) })
		gp, err := Place(inv, left, req.Request)
		if err != nil {
			continue
		}
		best, found = choice(i, pl, gp, evict, u), true
	}
	return best, found
}

// ScaleInOrder lists the replicas to remove first when scaling in: replicas outside every
// unit, then the last unit's, back to the first; newest first within each (by Created,
// then by name, descending). Terminating replicas are already going and are left out.
// ACK calls its reverse order best effort; here it is exact.
func ScaleInOrder(placed []UnitPlacement) []string {
	order := make([]*UnitPlacement, 0, len(placed))
	for i := range placed {
		if !placed[i].Terminating {
			order = append(order, &placed[i])
		}
	}
	rank := func(p *UnitPlacement) int {
		if p.Unit < 0 {
			return int(^uint(0) >> 1)
		}
		return p.Unit
	}
	slices.SortFunc(order, func(a, b *UnitPlacement) int {
		return cmp.Or(cmp.Compare(rank(b), rank(a)), b.Created.Compare(a.Created), cmp.Compare(b.Replica, a.Replica))
	})
	out := make([]string, len(order))
	for i, p := range order {
		out[i] = p.Replica
	}
	return out
}
