package modelserver

import (
	"container/list"
	"context"
	"sync"
)

// gate is a fair counting semaphore: at most n holders, and waiters are let
// in strictly in the order they arrived. A waiter whose context ends leaves
// the queue without disturbing the others. The queue is unbounded: bounding
// it is the platform's breaker's job, in front of this server.
type gate struct {
	mu      sync.Mutex
	free    int
	waiters list.List // of chan struct{}, closed to hand over a slot
}

func newGate(n int) *gate { return &gate{free: n} }

// acquire takes a slot, waiting for one in FIFO order until ctx ends.
// waiting, if not nil, is called once the caller is queued (not when a slot
// was free at once).
func (g *gate) acquire(ctx context.Context, waiting func()) error {
	g.mu.Lock()
	if g.free > 0 && g.waiters.Len() == 0 {
		g.free--
		g.mu.Unlock()
		return nil
	}
	ready := make(chan struct{})
	elem := g.waiters.PushBack(ready)
	g.mu.Unlock()
	if waiting != nil {
		waiting()
	}

	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		g.mu.Lock()
		select {
		case <-ready:
			// Handed a slot while giving up: pass it on.
			g.mu.Unlock()
			g.release()
		default:
			g.waiters.Remove(elem)
			g.mu.Unlock()
		}
		return ctx.Err()
	}
}

// release gives a slot back, to the longest waiter if there is one.
func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if front := g.waiters.Front(); front != nil {
		close(g.waiters.Remove(front).(chan struct{}))
		return
	}
	g.free++
}

// waiting returns how many are queued.
func (g *gate) waiting() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.waiters.Len()
}
