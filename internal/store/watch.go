package store

import (
	"context"
	"fmt"
	"sort"
	"strconv"
)

// EventType says what happened to an object.
type EventType int

// Event types, as in a Kubernetes watch. (Prefixed: Deleted is also an Action.)
const (
	EventAdded EventType = iota + 1
	EventModified
	EventDeleted
)

func (t EventType) String() string {
	switch t {
	case EventAdded:
		return "ADDED"
	case EventModified:
		return "MODIFIED"
	case EventDeleted:
		return "DELETED"
	}
	return "EventType(" + strconv.Itoa(int(t)) + ")"
}

// Event is one change to one object. Revision is that of the Apply that made
// it; every event of one Apply has the same revision. For EventAdded and
// EventModified, Object is the new state (Object.Revision == Revision); for
// EventDeleted it is the last stored state, with the revision it was written
// at.
type Event struct {
	Type     EventType
	Object   Object
	Revision uint64
	// Last marks the last event of its Apply: a watcher that waits for it sees every Apply
	// whole.
	Last bool
}

// Watch returns a channel that delivers, in order, every event with a
// revision greater than fromRevision: first those still in the event log,
// then live ones as Applies commit. A fromRevision past the current one is
// allowed; events up to it are skipped.
//
// Watch returns ErrCompacted if events after fromRevision have left the log
// (including every revision before the one the store was opened at), and
// ErrClosed after Close.
//
// The channel is closed when ctx is done, when the store closes, or when the
// watcher falls further behind than the log holds (Options.WatchHistory
// events): Apply never waits for a watcher. After such a close, Watch from the
// last revision received returns ErrCompacted; resync with ListWithRevision.
func (s *Store) Watch(ctx context.Context, fromRevision uint64) (<-chan Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: watch: %w", err)
	}
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		return nil, fmt.Errorf("store: watch: %w", ErrClosed)
	}
	if fromRevision < s.logStart {
		start := s.logStart
		s.mu.Unlock()
		return nil, fmt.Errorf("store: watch from revision %d: %w (the oldest revision it can resume from is %d)", fromRevision, ErrCompacted, start)
	}
	s.watchers++
	s.wg.Add(1) // under mu, so Close cannot be in wg.Wait yet
	s.mu.Unlock()
	ch := make(chan Event)
	go s.serve(ctx, fromRevision, ch)
	return ch, nil
}

// serve runs one watcher: a cursor into the shared event log.
func (s *Store) serve(ctx context.Context, pos uint64, ch chan<- Event) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		s.watchers--
		s.mu.Unlock()
	}()
	defer close(ch)
	var batch []Event
	for {
		if ctx.Err() != nil || s.closed.Load() {
			return
		}
		s.mu.Lock()
		if pos < s.logStart {
			start := s.logStart
			s.mu.Unlock()
			s.log.Warn("store: watcher fell behind the event log; closing it", "revision", pos, "oldest", start)
			return
		}
		i := sort.Search(len(s.events), func(i int) bool { return s.events[i].Revision > pos })
		// Copy: compaction clears the log's dropped entries.
		batch = append(batch[:0], s.events[i:]...)
		notify := s.notify
		s.mu.Unlock()

		if len(batch) == 0 {
			select {
			case <-notify:
			case <-ctx.Done():
				return
			case <-s.done:
				return
			}
			continue
		}
		for i, ev := range batch {
			ev.Last = i == len(batch)-1 || batch[i+1].Revision != ev.Revision
			select {
			case ch <- ev:
			case <-ctx.Done():
				return
			case <-s.done:
				return
			}
		}
		// The batch holds whole Applies: the log gets each one at once.
		pos = batch[len(batch)-1].Revision
		clear(batch)
	}
}

// publish makes a committed Apply's events visible to watchers. The caller
// holds writeMu, so revisions arrive in order.
func (s *Store) publish(rev uint64, events []Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev = rev
	s.events = append(s.events, events...)
	// Compact: drop the oldest Applies, whole, while over the bound, but
	// never the newest one.
	for len(s.events) > s.history && s.events[0].Revision != rev {
		oldest := s.events[0].Revision
		n := sort.Search(len(s.events), func(i int) bool { return s.events[i].Revision > oldest })
		clear(s.events[:n]) // let Data be collected before the array is reallocated
		s.events = s.events[n:]
		s.logStart = oldest
	}
	close(s.notify)
	s.notify = make(chan struct{})
}
