package testutil

import (
	"slices"
	"testing"
	"time"
)

func TestFakeClock(t *testing.T) {
	start := time.Unix(1000, 0)
	c := NewFakeClock(start)
	after := c.After(2 * time.Second)
	funcs := make(chan time.Time, 4)
	stopped := c.AfterFunc(time.Second, func() { funcs <- c.Now() })
	c.AfterFunc(3*time.Second, func() { funcs <- c.Now() })
	tk := c.NewTicker(time.Second)
	defer tk.Stop()
	if got, want := c.Pending(), []time.Duration{time.Second, time.Second, 2 * time.Second, 3 * time.Second}; !slices.Equal(got, want) {
		t.Fatalf("pending %v, want %v", got, want)
	}
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop: true once, then false")
	}
	c.Advance(1500 * time.Millisecond)
	if got := (<-tk.C()).Sub(start); got != time.Second {
		t.Fatalf("tick at %v", got)
	}
	select {
	case <-after:
		t.Fatal("After fired early")
	default:
	}
	c.Advance(2 * time.Second) // to 3.5 s: After (2 s), AfterFunc (3 s), ticks at 2 s and 3 s (one dropped)
	if got := (<-after).Sub(start); got != 2*time.Second {
		t.Fatalf("After fired at %v", got)
	}
	if got := <-funcs; got.Sub(start) < 3*time.Second {
		t.Fatalf("AfterFunc saw %v", got.Sub(start))
	}
	if got := (<-tk.C()).Sub(start); got != 2*time.Second {
		t.Fatalf("second tick at %v (the 3 s one is dropped while unread)", got)
	}
	if got := c.Now().Sub(start); got != 3500*time.Millisecond {
		t.Fatalf("now %v", got)
	}
	if ch := c.After(0); (<-ch).Sub(start) != 3500*time.Millisecond {
		t.Fatal("After(0) fires at once")
	}
}
