package gateway

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/infera-dev/infera/internal/workload"
)

// maxPendingStats bounds the buckets a revision keeps for a Collect that does not come.
const maxPendingStats = 3600

// grant is what a waiting request is handed: a replica with a slot reserved for it, or an error.
type grant struct {
	ep  *endpoint
	err error
}

// waiter is a request waiting for a slot, linked into one waitQueue. It lives inside the
// request's own state: holding a request costs this struct and a one-slot channel.
type waiter struct {
	next, prev *waiter
	on         *waitQueue
	ch         chan grant
	exclude    []*endpoint // replicas that refused this request's connection
	// viaActivator: the request went through the activator (in the path, or held).
	viaActivator bool
	// held: it waited in the activator queue while the revision had no ready replica.
	held bool
	// progress, when set, is called every ProgressEvery while the request waits for a slot
	// (X-Infera-Progress: sse).
	progress func()
}

func (w *waiter) excludes(ep *endpoint) bool {
	for _, x := range w.exclude {
		if x == ep {
			return true
		}
	}
	return false
}

// waitQueue is an intrusive FIFO of waiters.
type waitQueue struct {
	head, tail *waiter
	n          int
}

func (q *waitQueue) push(w *waiter) {
	w.on, w.next, w.prev = q, nil, q.tail
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
	q.n++
}

func (q *waitQueue) remove(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.next, w.prev, w.on = nil, nil, nil
	q.n--
}

// endpoint is one replica of a revision: ready (receiving new requests) or draining.
type endpoint struct {
	replica  string
	addr     string
	ready    bool
	inflight int
	lastDone time.Time     // when its last request ended (inflight fell to 0)
	queue    waitQueue     // the replica's breaker queue (activator out of the path)
	idle     chan struct{} // closed when inflight drops to 0; nil while nobody waits
}

// revision is the gateway's state for one revision: its settings, ready replicas, queues and
// load statistics, all under mu.
type revision struct {
	g  *Gateway
	id workload.RevisionID

	mu       sync.Mutex
	cfg      workload.Revision
	removed  bool
	inPath   bool
	eps      []*endpoint          // ready, in the order given
	all      map[string]*endpoint // ready and draining, by replica name
	queue    waitQueue            // the activator queue
	rr       uint
	demanded bool // OnDemand was called in this cold episode
	active   int  // requests of this revision inside the gateway
	stats    statsAcc
	mx       *revMetrics
}

func newRevision(g *Gateway, id workload.RevisionID) *revision {
	r := &revision{g: g, id: id, inPath: true, all: make(map[string]*endpoint)}
	ns, name, _ := strings.Cut(string(id), "/")
	r.cfg = workload.Revision{ID: id, Namespace: ns, Name: name, Timeout: workload.DefaultTimeout}
	r.mx = g.metrics.forRevision(r.cfg)
	return r
}

func (r *revision) isRemoved() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.removed
}

func (r *revision) config() workload.Revision {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg
}

func (r *revision) setConfig(rev workload.Revision) {
	rev.ID = r.id
	if rev.Timeout <= 0 {
		rev.Timeout = workload.DefaultTimeout
	}
	if rev.ContainerConcurrency < 0 {
		rev.ContainerConcurrency = 0
	}
	mx := r.g.metrics.forRevision(rev)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cfg = rev
	if r.mx != nil && r.mx.labels != mx.labels {
		r.mx.forget() // the names changed: drop the old queue-depth series
	}
	r.mx = mx
	r.dispatchLocked()
}

func (r *revision) setInPath(inPath bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inPath = inPath
	r.dispatchLocked()
}

// setEndpoints replaces the ready set; it reports whether a cold episode with held requests
// has just begun (the caller then calls OnDemand).
func (r *revision) setEndpoints(eps []workload.Endpoint) (demand bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	next := make([]*endpoint, 0, len(eps))
	keep := make(map[*endpoint]bool, len(eps))
	for _, e := range eps {
		ep := r.all[e.Replica]
		if ep == nil || ep.addr != e.Addr {
			ep = &endpoint{replica: e.Replica, addr: e.Addr}
			r.all[e.Replica] = ep
		}
		if keep[ep] {
			continue
		}
		ep.ready = true
		keep[ep] = true
		next = append(next, ep)
	}
	for _, old := range r.eps {
		if keep[old] {
			continue
		}
		old.ready = false
		for w := old.queue.head; w != nil; w = old.queue.head {
			old.queue.remove(w)
			r.queue.push(w) // back to the activator: another replica takes it
		}
		if old.inflight == 0 && r.all[old.replica] == old {
			delete(r.all, old.replica)
		}
	}
	r.eps = next
	if len(next) > 0 {
		r.demanded = false
	} else if r.queue.n > 0 && !r.demanded && !r.removed {
		r.demanded, demand = true, true
	}
	r.dispatchLocked()
	r.queueChangedLocked()
	return demand
}

// remove fails every waiting request and reports whether nothing is left in flight.
func (r *revision) remove() (idle bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removed = true
	fail := func(q *waitQueue) {
		for w := q.head; w != nil; w = q.head {
			q.remove(w)
			w.ch <- grant{err: ErrRevisionRemoved}
		}
	}
	fail(&r.queue)
	for _, ep := range r.all {
		fail(&ep.queue)
	}
	if r.mx != nil {
		r.mx.forget()
		r.mx = nil
	}
	return r.active == 0
}

func (r *revision) inFlight(replica string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ep := r.all[replica]; ep != nil {
		return ep.inflight
	}
	return 0
}

func (r *revision) lastActive(replica string) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ep := r.all[replica]; ep != nil {
		return ep.lastDone
	}
	return time.Time{}
}

func (r *revision) queued() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.queuedLocked()
}

func (r *revision) queuedLocked() int {
	n := r.queue.n
	for _, ep := range r.all {
		n += ep.queue.n
	}
	return n
}

// idleChan returns a channel closed when the replica has nothing in flight, nil if it has
// nothing in flight now.
func (r *revision) idleChan(replica string) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	ep := r.all[replica]
	if ep == nil || ep.inflight == 0 {
		return nil
	}
	if ep.idle == nil {
		ep.idle = make(chan struct{})
	}
	return ep.idle
}

// begin counts a request in; probes are kept out of the statistics (Knative).
func (r *revision) begin(now time.Time, probe bool) (workload.Revision, *revMetrics, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.removed {
		return r.cfg, r.mx, ErrRevisionRemoved
	}
	r.active++
	if !probe {
		r.stats.advance(r.id, now)
		r.stats.conc++
		r.stats.reqs++
	}
	return r.cfg, r.mx, nil
}

// end counts a request out.
func (r *revision) end(now time.Time, probe bool) {
	r.mu.Lock()
	r.active--
	if !probe {
		r.stats.advance(r.id, now)
		r.stats.conc--
	}
	forget := r.removed && r.active == 0
	r.mu.Unlock()
	if forget {
		r.g.forget(r)
	}
}

func (r *revision) collect(now time.Time, out []workload.Stat) []workload.Stat {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stats.advance(r.id, now)
	out = append(out, r.stats.done...)
	r.stats.done = r.stats.done[:0]
	return out
}

// acquire returns a replica with a slot reserved for the request, waiting in the activator
// queue or a breaker queue when needed, until ctx ends. The caller must release the replica.
func (r *revision) acquire(ctx context.Context, w *waiter) (*endpoint, error) {
	r.mu.Lock()
	if r.removed {
		r.mu.Unlock()
		return nil, ErrRevisionRemoved
	}
	ep, q, demand, err := r.placeLocked(w)
	w.viaActivator = w.viaActivator || r.inPath || q == &r.queue
	w.held = w.held || (q == &r.queue && len(r.eps) == 0)
	if ep != nil {
		ep.inflight++
		r.mu.Unlock()
		return ep, nil
	}
	if err != nil {
		r.mu.Unlock()
		return nil, err
	}
	if w.ch == nil {
		w.ch = make(chan grant, 1)
	}
	q.push(w)
	r.queueChangedLocked()
	r.mu.Unlock()
	if demand {
		r.g.demand(r.id)
	}
	var tick <-chan time.Time
	if w.progress != nil {
		t := r.g.clock.NewTicker(ProgressEvery)
		defer t.Stop()
		tick = t.C()
		w.progress() // at once: the client knows it is held
	}
wait:
	for {
		select {
		case gr := <-w.ch:
			return gr.ep, gr.err
		case <-tick:
			w.progress()
		case <-ctx.Done():
			break wait
		}
	}
	r.mu.Lock()
	if w.on != nil {
		w.on.remove(w)
		r.queueChangedLocked()
		r.mu.Unlock()
		return nil, ctx.Err()
	}
	r.mu.Unlock()
	// Granted while ctx ended: give the slot back.
	if gr := <-w.ch; gr.ep != nil {
		r.release(gr.ep)
	}
	return nil, ctx.Err()
}

// placeLocked decides where a new request goes: a replica with a free slot (ep), a queue to
// wait in (q), or an error. demand says a cold episode has just begun.
func (r *revision) placeLocked(w *waiter) (ep *endpoint, q *waitQueue, demand bool, err error) {
	eligible := 0
	for _, e := range r.eps {
		if !w.excludes(e) {
			eligible++
		}
	}
	activator := func() (*endpoint, *waitQueue, bool, error) {
		if r.queue.n >= r.g.cfg.QueueDepth {
			return nil, nil, false, ErrActivatorQueueFull
		}
		return nil, &r.queue, demand, nil
	}
	if eligible == 0 {
		if len(r.eps) == 0 && !r.demanded {
			r.demanded, demand = true, true
		}
		return activator()
	}
	if r.queue.n > 0 { // first come, first served behind the held ones
		return activator()
	}
	cc := r.cfg.ContainerConcurrency
	if r.inPath || cc == 0 {
		if ep := r.leastFreeLocked(w); ep != nil {
			return ep, nil, false, nil
		}
		return activator()
	}
	// Out of the path: queue-proxy's breaker on the least loaded replica.
	ep = r.leastLoadedLocked(w)
	if ep.inflight < cc && ep.queue.n == 0 {
		return ep, nil, false, nil
	}
	if ep.queue.n < workload.QueueDepthPerConcurrency*cc {
		return nil, &ep.queue, false, nil
	}
	return nil, nil, false, ErrRequestQueueFull
}

// leastFreeLocked is the ready replica with a free slot and the fewest requests in flight,
// ties broken round robin; nil when every one is full.
func (r *revision) leastFreeLocked(w *waiter) *endpoint {
	cc := r.cfg.ContainerConcurrency
	n := len(r.eps)
	if n == 0 {
		return nil
	}
	start := int(r.rr % uint(n))
	r.rr++
	var best *endpoint
	for i := range n {
		e := r.eps[(start+i)%n]
		if (cc > 0 && e.inflight >= cc) || (w != nil && w.excludes(e)) {
			continue
		}
		if best == nil || e.inflight < best.inflight {
			best = e
		}
	}
	return best
}

// leastLoadedLocked is the eligible ready replica with the fewest requests in flight or queued.
func (r *revision) leastLoadedLocked(w *waiter) *endpoint {
	n := len(r.eps)
	start := int(r.rr % uint(n))
	r.rr++
	var best *endpoint
	for i := range n {
		e := r.eps[(start+i)%n]
		if w.excludes(e) {
			continue
		}
		if best == nil || e.inflight+e.queue.n < best.inflight+best.queue.n {
			best = e
		}
	}
	return best
}

// release gives a replica's slot back and hands it to the next waiter.
func (r *revision) release(ep *endpoint) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ep.inflight--
	cc := r.cfg.ContainerConcurrency
	if w := ep.queue.head; w != nil && (cc == 0 || ep.inflight < cc) {
		ep.queue.remove(w)
		ep.inflight++
		w.ch <- grant{ep: ep}
		r.queueChangedLocked()
	}
	r.dispatchLocked()
	if ep.inflight == 0 {
		ep.lastDone = r.g.clock.Now()
		if ep.idle != nil {
			close(ep.idle)
			ep.idle = nil
		}
		if !ep.ready && r.all[ep.replica] == ep {
			delete(r.all, ep.replica)
		}
	}
}

// dispatchLocked hands free slots of ready replicas to the activator queue, oldest first.
func (r *revision) dispatchLocked() {
	if r.queue.n == 0 || len(r.eps) == 0 {
		return
	}
	changed := false
	for w := r.queue.head; w != nil; {
		next := w.next
		ep := r.leastFreeLocked(w)
		if ep == nil {
			if len(w.exclude) == 0 {
				break // no free slot for anyone
			}
			w = next
			continue
		}
		r.queue.remove(w)
		ep.inflight++
		w.ch <- grant{ep: ep}
		changed = true
		w = next
	}
	if changed {
		r.queueChangedLocked()
	}
}

func (r *revision) queueChangedLocked() {
	if r.mx != nil {
		r.mx.queueDepth.Set(float64(r.queuedLocked()))
	}
}

// statsAcc keeps Knative's per-second load of a revision on the injected clock: the
// time-weighted average of requests in flight (held ones included) and the arrivals.
type statsAcc struct {
	conc int
	last time.Time // when area was last brought up to date
	end  time.Time // end of the current bucket; zero before the first event
	area float64   // request-seconds in the current bucket
	reqs float64
	done []workload.Stat
}

func bucketEnd(t time.Time) time.Time { return t.Truncate(time.Second).Add(time.Second) }

// advance brings the accumulator to t, closing every bucket that ended by then. Seconds with
// nothing in flight and no arrival are not reported (they are zeros to the autoscaler).
func (s *statsAcc) advance(id workload.RevisionID, t time.Time) {
	if s.end.IsZero() {
		s.end, s.last = bucketEnd(t), t
		return
	}
	if t.Before(s.last) {
		t = s.last
	}
	for !t.Before(s.end) {
		s.area += float64(s.conc) * s.end.Sub(s.last).Seconds()
		if s.area > 0 || s.reqs > 0 {
			if len(s.done) >= maxPendingStats {
				s.done = append(s.done[:0], s.done[1:]...)
			}
			s.done = append(s.done, workload.Stat{Revision: id, Time: s.end, Concurrency: s.area, Requests: s.reqs})
		}
		s.area, s.reqs = 0, 0
		if s.conc == 0 {
			s.end, s.last = bucketEnd(t), t
			break
		}
		s.last = s.end
		s.end = s.end.Add(time.Second)
	}
	s.area += float64(s.conc) * t.Sub(s.last).Seconds()
	s.last = t
}
