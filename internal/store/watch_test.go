package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"testing/synctest"

	"github.com/infera-dev/infera/internal/store"
)

// Watch tests run in a synctest bubble: a receive that can never complete is
// reported as a deadlock instead of hanging, synctest.Wait replaces sleeps,
// and synctest.Test fails if a goroutine outlives the test.

// describe renders an event for comparison: "ADDED a=A gen 1 @1 rev 1".
func describe(ev store.Event) string {
	last := ""
	if ev.Last {
		last = " last"
	}
	return fmt.Sprintf("%s %s=%s gen %d @%d rev %d%s", ev.Type, ev.Object.Key.Name, ev.Object.Data, ev.Object.Generation, ev.Object.Revision, ev.Revision, last)
}

func receive(t *testing.T, ch <-chan store.Event, n int) []string {
	t.Helper()
	var got []string
	for range n {
		ev, ok := <-ch
		if !ok {
			t.Fatalf("channel closed after %d events: %q", len(got), got)
		}
		got = append(got, describe(ev))
	}
	return got
}

// expectIdle checks nothing is ready on ch once every goroutine is blocked.
func expectIdle(t *testing.T, ch <-chan store.Event) {
	t.Helper()
	synctest.Wait()
	select {
	case ev, ok := <-ch:
		t.Fatalf("unexpected receive: %s (open %v)", describe(ev), ok)
	default:
	}
}

// expectClosed drains ch until it closes and returns what it delivered.
func expectClosed(t *testing.T, ch <-chan store.Event) []store.Event {
	t.Helper()
	var evs []store.Event
	for ev := range ch {
		evs = append(evs, ev)
	}
	return evs
}

func TestWatchDeliversInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newStore(t, store.Options{})
		ch, err := s.Watch(t.Context(), 0)
		if err != nil {
			t.Fatal(err)
		}
		mustApply(t, s, []store.Object{secret("a", "A"), secret("b", "B")}, nil)
		mustApply(t, s, []store.Object{secret("a", "A2"), secret("b", "B")}, nil)
		mustApply(t, s, nil, []store.Key{secret("b", "").Key})
		mustApply(t, s, []store.Object{secret("a", "A2")}, nil) // no-op: no event
		mustApply(t, s, []store.Object{secret("c", "C")}, nil)
		want := []string{ // "last" marks the end of each Apply
			"ADDED a=A gen 1 @1 rev 1",
			"ADDED b=B gen 1 @1 rev 1 last",
			"MODIFIED a=A2 gen 2 @2 rev 2 last",
			"DELETED b=B gen 1 @1 rev 3 last", // the last state, as written at revision 1
			"ADDED c=C gen 1 @4 rev 4 last",
		}
		if got := receive(t, ch, len(want)); !slices.Equal(got, want) {
			t.Errorf("events:\n%q\nwant\n%q", got, want)
		}
		expectIdle(t, ch)
	})
}

func TestWatchReplaysFromRevision(t *testing.T) {
	tests := []struct {
		from     uint64
		wantRevs []uint64 // the watcher sees these, up to revision 8
	}{
		{from: 0, wantRevs: []uint64{1, 2, 3, 4, 5, 6, 7, 8}},
		{from: 2, wantRevs: []uint64{3, 4, 5, 6, 7, 8}},
		{from: 5, wantRevs: []uint64{6, 7, 8}}, // current: live events only
		{from: 7, wantRevs: []uint64{8}},       // future: skips until then
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint("from ", tt.from), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newStore(t, store.Options{})
				for i := range 5 {
					mustApply(t, s, []store.Object{secret(fmt.Sprint("o", i), "x")}, nil)
				}
				ch, err := s.Watch(t.Context(), tt.from)
				if err != nil {
					t.Fatal(err)
				}
				for i := 5; i < 8; i++ {
					mustApply(t, s, []store.Object{secret(fmt.Sprint("o", i), "x")}, nil)
				}
				var got []uint64
				for ev := range ch {
					got = append(got, ev.Revision)
					if ev.Revision == 8 {
						break
					}
				}
				if !slices.Equal(got, tt.wantRevs) {
					t.Errorf("revisions = %v, want %v", got, tt.wantRevs)
				}
			})
		})
	}
}

func TestWatchCompacted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), store.FileName)
		s, err := store.Open(path, store.Options{WatchHistory: 3})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 6 { // revisions 1..6; the log keeps 4, 5, 6
			mustApply(t, s, []store.Object{secret(fmt.Sprint("o", i), "x")}, nil)
		}
		for _, from := range []uint64{0, 2} {
			if _, err := s.Watch(t.Context(), from); !errors.Is(err, store.ErrCompacted) {
				t.Errorf("Watch(%d): %v, want ErrCompacted", from, err)
			}
		}
		ch, err := s.Watch(t.Context(), 3)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"ADDED o3=x gen 1 @4 rev 4 last", "ADDED o4=x gen 1 @5 rev 5 last", "ADDED o5=x gen 1 @6 rev 6 last"}
		if got := receive(t, ch, 3); !slices.Equal(got, want) {
			t.Errorf("Watch(3) = %q, want %q", got, want)
		}

		// One Apply bigger than the history is kept whole.
		var big []store.Object
		for i := range 5 {
			big = append(big, secret(fmt.Sprint("big", i), "x"))
		}
		mustApply(t, s, big, nil) // revision 7
		if got := receive(t, ch, 5); len(got) != 5 {
			t.Errorf("big apply: %q", got)
		}
		if _, err := s.Watch(t.Context(), 6); err != nil {
			t.Errorf("Watch(6) after a big apply: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, ch)

		// The log starts empty at Open: only the current revision resumes.
		s = openStore(t, path, store.Options{})
		if _, err := s.Watch(t.Context(), 6); !errors.Is(err, store.ErrCompacted) {
			t.Errorf("Watch(6) after reopen: %v, want ErrCompacted", err)
		}
		objs, rev, err := s.ListWithRevision("", "", "")
		if err != nil || len(objs) != 11 || rev != 7 {
			t.Fatalf("ListWithRevision = %d objects, revision %d, %v", len(objs), rev, err)
		}
		ch, err = s.Watch(t.Context(), rev)
		if err != nil {
			t.Fatal(err)
		}
		mustApply(t, s, nil, []store.Key{secret("o0", "").Key})
		if got := receive(t, ch, 1); got[0] != "DELETED o0=x gen 1 @1 rev 8 last" {
			t.Errorf("after reopen: %q", got)
		}
	})
}

func TestWatchContextCancelClosesChannel(t *testing.T) {
	tests := []struct {
		name    string
		pending int // events the watcher is trying to send when cancelled
	}{
		{"idle", 0},
		{"blocked sending", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newStore(t, store.Options{})
				ctx, cancel := context.WithCancel(t.Context())
				ch, err := s.Watch(ctx, 0)
				if err != nil {
					t.Fatal(err)
				}
				other, err := s.Watch(t.Context(), 0)
				if err != nil {
					t.Fatal(err)
				}
				for i := range tt.pending {
					mustApply(t, s, []store.Object{secret(fmt.Sprint("o", i), "x")}, nil)
				}
				synctest.Wait()
				cancel()
				expectClosed(t, ch)
				synctest.Wait()
				if n := s.Watchers(); n != 1 {
					t.Errorf("%d watcher goroutines after cancel, want 1 (the other)", n)
				}
				// The other watcher is unaffected.
				mustApply(t, s, []store.Object{secret("last", "x")}, nil)
				if got := receive(t, other, tt.pending+1); len(got) != tt.pending+1 {
					t.Errorf("other watcher: %q", got)
				}
			})
		})
	}
}

func TestWatchAfterCancelledContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newStore(t, store.Options{})
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := s.Watch(ctx, 0); !errors.Is(err, context.Canceled) {
			t.Errorf("Watch with a done context: %v", err)
		}
	})
}

func TestCloseClosesWatchers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s, err := store.Open(filepath.Join(t.TempDir(), store.FileName), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		idle, err := s.Watch(t.Context(), 0)
		if err != nil {
			t.Fatal(err)
		}
		mustApply(t, s, []store.Object{secret("a", "A"), secret("b", "B")}, nil)
		blocked, err := s.Watch(t.Context(), 0)
		if err != nil {
			t.Fatal(err)
		}
		receive(t, idle, 2)
		synctest.Wait()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if n := s.Watchers(); n != 0 { // Close waits for them
			t.Errorf("%d watcher goroutines after Close", n)
		}
		if evs := expectClosed(t, idle); len(evs) != 0 {
			t.Errorf("idle watcher got %d events after Close", len(evs))
		}
		expectClosed(t, blocked) // may deliver what it was sending; must close
		if _, err := s.Watch(t.Context(), 1); !errors.Is(err, store.ErrClosed) {
			t.Errorf("Watch after Close: %v, want ErrClosed", err)
		}
	})
}

func TestSlowWatcher(t *testing.T) {
	tests := []struct {
		name    string
		applies int
		dropped bool
	}{
		{"within the history it catches up", 8, false},
		{"past the history it is dropped", 50, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := newStore(t, store.Options{WatchHistory: 8})
				ch, err := s.Watch(t.Context(), 0)
				if err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				// Nobody reads ch. If an Apply waited for the watcher, the
				// bubble would deadlock and the test fail.
				for i := range tt.applies {
					mustApply(t, s, []store.Object{secret(fmt.Sprint("o", i), "x")}, nil)
				}
				if !tt.dropped {
					if got := receive(t, ch, tt.applies); len(got) != tt.applies {
						t.Fatalf("got %q", got)
					}
					expectIdle(t, ch)
					return
				}
				evs := expectClosed(t, ch)
				for i, ev := range evs { // a gapless prefix
					if ev.Revision != uint64(i+1) {
						t.Fatalf("event %d has revision %d", i, ev.Revision)
					}
				}
				if len(evs) >= tt.applies {
					t.Fatalf("dropped watcher delivered all %d events", len(evs))
				}
				if _, err := s.Watch(t.Context(), uint64(len(evs))); !errors.Is(err, store.ErrCompacted) {
					t.Errorf("re-Watch from the last revision seen: %v, want ErrCompacted", err)
				}
				if n := s.Watchers(); n != 0 {
					t.Errorf("%d watcher goroutines after the drop", n)
				}
			})
		})
	}
}

// TestWatchFromListRevision checks ListWithRevision + Watch has no gap and
// no overlap.
func TestWatchFromListRevision(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newStore(t, store.Options{})
		mustApply(t, s, []store.Object{secret("a", "A")}, nil)
		objs, rev, err := s.ListWithRevision("", "Secret", "")
		if err != nil || len(objs) != 1 {
			t.Fatal(objs, err)
		}
		mustApply(t, s, []store.Object{secret("b", "B")}, nil)
		ch, err := s.Watch(t.Context(), rev)
		if err != nil {
			t.Fatal(err)
		}
		if got := receive(t, ch, 1); got[0] != "ADDED b=B gen 1 @2 rev 2 last" {
			t.Errorf("got %q", got)
		}
		expectIdle(t, ch)
	})
}
