package supervisor

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/infera-dev/infera/internal/placement"
	"github.com/infera-dev/infera/internal/workload"
)

// Annotations that steer the GPU hand-off.
const (
	// AnnotationGPUEvictable "false" on a revision keeps its replicas from being stopped to
	// hand their GPU to another revision.
	AnnotationGPUEvictable = "infera.dev/gpu-evictable"
	annotationMinScale     = "autoscaling.knative.dev/min-scale"
)

// ReasonUnschedulable is a replica's reason while no GPU fits it, as Kubernetes names a pod
// that cannot be scheduled.
const ReasonUnschedulable = "Unschedulable"

// maxHandoffEvents is how many hand-offs the supervisor remembers.
const maxHandoffEvents = 100

// Handoff is one ordered GPU hand-off: idle replicas stopped so that a replica of a cold
// revision could be placed.
type Handoff struct {
	At          time.Time           `json:"at"`
	Evicted     []string            `json:"evicted"`     // the replicas stopped
	From        []string            `json:"from"`        // their revisions, namespace/name
	For         string              `json:"for"`         // the replica placed in their stead
	ForRevision workload.RevisionID `json:"forRevision"` // its revision
	Message     string              `json:"message"`
}

func (h Handoff) String() string {
	return fmt.Sprintf("GPU hand-off: stopped idle %s (%s) for %s of %s", strings.Join(h.Evicted, ", "), strings.Join(h.From, ", "), h.For, h.ForRevision)
}

// gpuRequest is what a replica of rev asks of the GPUs.
func gpuRequest(replica string, rev workload.Revision) placement.Request {
	return placement.Request{
		Replica: replica, Revision: string(rev.ID),
		GPUMemGiB: rev.Container.GPUMemGiB, GPUCount: rev.Container.GPUCount, WholeGPUs: rev.Container.GPUs,
	}
}

// heldLocked is every reservation held now, in replica order.
func (s *Supervisor) heldLocked() []placement.Reservation {
	names := make([]string, 0, len(s.gpuRes))
	for n := range s.gpuRes {
		names = append(names, n)
	}
	slices.Sort(names)
	var out []placement.Reservation
	for _, n := range names {
		out = append(out, s.gpuRes[n]...)
	}
	return out
}

// releaseGPUs gives a replica's reservations back and wakes the replicas waiting for a GPU.
func (s *Supervisor) releaseGPUs(r *replica) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.gpuRes[r.name]; !ok {
		return
	}
	delete(s.gpuRes, r.name)
	close(s.gpuFreed)
	s.gpuFreed = make(chan struct{})
}

// minScale is the revision's autoscaling.knative.dev/min-scale (0 when unset).
func minScale(rev workload.Revision) int {
	n, _ := strconv.Atoi(rev.Annotations[annotationMinScale])
	return max(n, 0)
}

// placeGPUs reserves the GPUs a replica asks for before it starts. While none fits, the
// replica is Pending (the reason reads like ACK's: each GPU's free memory) and requests for
// its revision stay held in the gateway; when idle replicas of other revisions hold enough
// (no request in flight, above their revision's min-scale, not opted out with
// infera.dev/gpu-evictable: "false"), the least recently used are drained and stopped, their
// memory seen free (Config.GPUReleased), and the replica placed: the ordered hand-off. It
// returns false when the replica is stopped first.
func (r *replica) placeGPUs(req placement.Request) bool {
	s := r.s
	var released []placement.Reservation // the victims' reservations, to see freed
	for {
		if len(released) > 0 && s.cfg.GPUReleased != nil {
			ctx, cancel := context.WithCancel(s.forceCtx)
			go func() {
				select {
				case <-r.stopCh:
					cancel()
				case <-ctx.Done():
				}
			}()
			if err := s.cfg.GPUReleased(ctx, released); err != nil && ctx.Err() == nil {
				s.log.Warn("gpu memory not seen released", "replica", r.name, "error", err)
			}
			cancel()
			released = nil
		}
		s.mu.Lock()
		if r.stopping || s.closed {
			s.mu.Unlock()
			return false
		}
		held := s.heldLocked()
		p, err := placement.Place(s.cfg.GPUs, held, req)
		if err == nil {
			s.gpuRes[r.name] = p.Reservations
			r.gpu = &p
			r.message, r.reason = "", ""
			if r.state == Pending {
				r.state = Starting
			}
			r.rs.unschedulable = ""
			s.mu.Unlock()
			s.log.Info("replica placed on GPUs", "revision", string(r.rev.ID), "replica", r.name, "gpus", gpuIndices(p))
			s.changed(r.rev.ID)
			return true
		}
		freed := s.gpuFreed
		r.state, r.reason, r.message = Pending, ReasonUnschedulable, err.Error()
		r.rs.unschedulable = err.Error()
		// Who could hand their GPU over: Ready replicas of other revisions holding GPUs.
		var names []*replica
		for name := range s.gpuRes {
			if v := s.byName[name]; v != nil && v.rs != r.rs && !v.stopping && v.state == Ready {
				names = append(names, v)
			}
		}
		s.mu.Unlock()
		cands := make([]placement.Candidate, 0, len(names))
		for _, v := range names {
			c := placement.Candidate{Replica: v.name, Revision: string(v.rev.ID), InFlight: s.cfg.Gateway.InFlight(v.rev.ID, v.name)}
			if la, ok := s.cfg.Gateway.(interface {
				LastActive(workload.RevisionID, string) time.Time
			}); ok {
				c.LastUsed = la.LastActive(v.rev.ID, v.name)
			}
			cands = append(cands, c)
		}
		s.mu.Lock()
		for i := range cands {
			v := s.byName[cands[i].Replica]
			if v == nil || v.stopping {
				continue
			}
			if cands[i].LastUsed.IsZero() {
				cands[i].LastUsed = v.readySince
			}
			active := 0
			for _, x := range v.rs.replicas {
				if !x.stopping {
					active++
				}
			}
			cands[i].AboveMinScale = active > minScale(v.rev)
			cands[i].Evictable = v.rev.Annotations[AnnotationGPUEvictable] != "false"
		}
		victims, verr := placement.Victims(s.cfg.GPUs, held, req, cands)
		var h Handoff
		if verr == nil && len(victims) > 0 {
			h = Handoff{At: s.clock.Now(), For: r.name, ForRevision: r.rev.ID}
			for _, name := range victims {
				v := s.byName[name]
				if v == nil || v.stopping {
					continue
				}
				released = append(released, s.gpuRes[name]...)
				v.rs.evicted++
				v.message = "stopped to hand its GPU to " + r.name + " of " + string(r.rev.ID)
				s.stopLocked(v)
				h.Evicted = append(h.Evicted, name)
				h.From = append(h.From, string(v.rev.ID))
			}
			h.Message = h.String()
			r.message = err.Error() + "; " + h.Message
			s.handoffs = append(s.handoffs, h)
			if len(s.handoffs) > maxHandoffEvents {
				s.handoffs = s.handoffs[len(s.handoffs)-maxHandoffEvents:]
			}
			s.handoffTotal++
		} else if verr != nil {
			r.message = verr.Error()
			r.rs.unschedulable = verr.Error()
		}
		st := r.statusLocked()
		s.mu.Unlock()
		if len(h.Evicted) > 0 {
			s.log.Info(h.Message)
			for _, id := range h.From {
				s.changed(workload.RevisionID(id))
			}
		} else {
			s.log.Info("replica pending: no GPU fits", "revision", string(r.rev.ID), "replica", r.name, "reason", st.Message)
		}
		s.changed(r.rev.ID)
		// Memory given back wakes it at once; a holder going idle (its request ended) is seen
		// on the next look.
		if !r.waitPlacement(freed, placeRetry) {
			return false
		}
	}
}

// waitPlacement waits for a look again at placing a Pending replica: GPU memory given back
// (freed closed) or wait passed. It reports false when the replica is stopped first.
func (r *replica) waitPlacement(freed <-chan struct{}, wait time.Duration) bool {
	retry, stop := timer(r.s.clock, wait)
	defer stop()
	select {
	case <-freed:
	case <-retry:
	case <-r.stopCh:
		return false
	case <-r.s.forceCtx.Done():
		return false
	}
	return true
}

// placeRetry is how often a replica waiting for a GPU looks again for idle replicas to take
// it over from.
const placeRetry = 250 * time.Millisecond

func gpuIndices(p placement.Placement) []int {
	var out []int
	for _, res := range p.Reservations {
		out = append(out, res.GPU)
	}
	return out
}

// Demand says a request waits for a revision with no ready replica: replicas its GPU
// hand-offs stopped may start again (and hand a GPU back in turn if they must).
func (s *Supervisor) Demand(id workload.RevisionID) {
	s.mu.Lock()
	rs := s.revs[id]
	if rs == nil || rs.evicted == 0 || s.closed {
		s.mu.Unlock()
		return
	}
	rs.evicted = 0
	s.reconcileLocked(rs, nil)
	s.mu.Unlock()
	s.changed(id)
}

// GPUReservation is one replica's hold on one GPU, for views.
type GPUReservation struct {
	Replica  string              `json:"replica"`
	Revision workload.RevisionID `json:"revision"`
	GPU      int                 `json:"gpu"`
	Bytes    int64               `json:"bytes"`
	Whole    bool                `json:"whole,omitempty"`
}

// GPUReservations lists what every replica holds, by GPU then replica.
func (s *Supervisor) GPUReservations() []GPUReservation {
	s.mu.Lock()
	held := s.heldLocked()
	s.mu.Unlock()
	out := make([]GPUReservation, 0, len(held))
	for _, h := range held {
		out = append(out, GPUReservation{Replica: h.Replica, Revision: workload.RevisionID(h.Revision), GPU: h.GPU, Bytes: h.MemoryBytes, Whole: h.Whole})
	}
	slices.SortFunc(out, func(a, b GPUReservation) int {
		if a.GPU != b.GPU {
			return a.GPU - b.GPU
		}
		return strings.Compare(a.Replica, b.Replica)
	})
	return out
}

// Handoffs lists the last hand-offs, oldest first, and how many there were in all.
func (s *Supervisor) Handoffs() ([]Handoff, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.handoffs), s.handoffTotal
}

// GPUHolder is a live replica holding GPUs: what the accounting against NVML needs.
type GPUHolder struct {
	Replica  string
	Revision workload.RevisionID
	PIDs     []int // its main process and every descendant (a container's too)
	Reserved int64 // bytes reserved, over its GPUs
	Enforce  string
}

// AnnotationGPUMemEnforce "kill" on a revision restarts a replica whose processes use more
// GPU memory than it reserved (NVML only).
const AnnotationGPUMemEnforce = "infera.dev/gpu-mem-enforce"

// GPUHolders lists the live replicas that hold GPUs, with their processes.
func (s *Supervisor) GPUHolders() []GPUHolder {
	s.mu.Lock()
	var out []GPUHolder
	for name, res := range s.gpuRes {
		r := s.byName[name]
		if r == nil || r.pid == 0 {
			continue
		}
		h := GPUHolder{Replica: name, Revision: r.rev.ID, PIDs: []int{r.pid}, Enforce: r.rev.Annotations[AnnotationGPUMemEnforce]}
		for _, x := range res {
			h.Reserved += x.MemoryBytes
		}
		out = append(out, h)
	}
	s.mu.Unlock()
	if len(out) == 0 {
		return nil
	}
	children := childrenByParent()
	for i := range out {
		out[i].PIDs = descendants(out[i].PIDs[0], children)
	}
	slices.SortFunc(out, func(a, b GPUHolder) int { return strings.Compare(a.Replica, b.Replica) })
	return out
}

// RestartReplica ends a replica's program (SIGKILL) so that it restarts as after a crash,
// with why in its status; false when no such replica runs.
func (s *Supervisor) RestartReplica(replica, why string) bool {
	s.mu.Lock()
	r := s.byName[replica]
	var inst Instance
	if r != nil && !r.stopping {
		inst = r.inst
		r.message = why
	}
	s.mu.Unlock()
	if inst == nil {
		return false
	}
	s.log.Warn("restarting replica", "replica", replica, "reason", why)
	inst.Kill()
	return true
}
