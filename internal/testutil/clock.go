package testutil

import (
	"slices"
	"sync"
	"time"

	"github.com/infera-dev/infera/internal/clock"
)

// FakeClock is the one hand-driven clock.Clock of infera's tests, for components whose tests
// use real processes or sockets and so cannot run in a testing/synctest bubble. Time moves only
// through Advance and Set; timers, After channels and tickers fire when their time is passed.
type FakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c      *FakeClock
	at     time.Time
	d      time.Duration
	fire   func(now time.Time)
	period time.Duration // tickers
	ch     chan time.Time
}

// NewFakeClock returns a clock standing at start.
func NewFakeClock(start time.Time) *FakeClock { return &FakeClock{now: start} }

func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *FakeClock) After(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	c.add(&fakeTimer{d: d, ch: ch, fire: func(now time.Time) { ch <- now }})
	return ch
}

func (c *FakeClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	return c.add(&fakeTimer{d: d, fire: func(time.Time) { go f() }})
}

func (c *FakeClock) NewTicker(d time.Duration) clock.Ticker {
	if d <= 0 {
		panic("testutil.FakeClock: non-positive ticker period")
	}
	ch := make(chan time.Time, 1)
	return fakeTicker{c.add(&fakeTimer{d: d, period: d, ch: ch, fire: func(now time.Time) {
		select { // a ticker drops ticks a slow reader misses, as time.Ticker does
		case ch <- now:
		default:
		}
	}})}
}

type fakeTicker struct{ t *fakeTimer }

func (f fakeTicker) C() <-chan time.Time { return f.t.ch }
func (f fakeTicker) Stop()               { f.t.Stop() }

func (c *FakeClock) add(t *fakeTimer) *fakeTimer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t.c, t.at = c, c.now.Add(t.d)
	if t.d <= 0 {
		t.fire(c.now)
		return t
	}
	c.timers = append(c.timers, t)
	return t
}

// Stop is clock.Timer's Stop.
func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	n := len(t.c.timers)
	t.c.timers = slices.DeleteFunc(t.c.timers, func(o *fakeTimer) bool { return o == t })
	return len(t.c.timers) < n
}

// Advance moves the clock forward by d, firing what falls due in time order.
func (c *FakeClock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// Set moves the clock to t (never backwards), firing what falls due in time order.
func (c *FakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		slices.SortStableFunc(c.timers, func(a, b *fakeTimer) int { return a.at.Compare(b.at) })
		if len(c.timers) == 0 || c.timers[0].at.After(t) {
			break
		}
		due := c.timers[0]
		if due.at.After(c.now) {
			c.now = due.at
		}
		if due.period > 0 {
			due.at = due.at.Add(due.period)
		} else {
			c.timers = c.timers[1:]
		}
		due.fire(c.now)
	}
	if t.After(c.now) {
		c.now = t
	}
}

// Pending lists the durations of the timers not yet fired, in the order they fall due.
func (c *FakeClock) Pending() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := slices.Clone(c.timers)
	slices.SortStableFunc(s, func(a, b *fakeTimer) int { return a.at.Compare(b.at) })
	out := make([]time.Duration, len(s))
	for i, t := range s {
		out[i] = t.d
	}
	return out
}
