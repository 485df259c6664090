// Package clock is the one time source of infera's long-lived components: the controller, the
// supervisor and the gateway take a Clock in their Config, and decision code takes `now` as an
// argument instead of reading the time itself.
//
// Real is the wall clock. Tests either run on Real inside a testing/synctest bubble (time there
// is fake and advances when every goroutine is blocked) or, where real processes and sockets
// keep a bubble from ever being idle, drive testutil.FakeClock by hand.
package clock

import (
	"context"
	"time"
)

// Clock tells the time and arms timers.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives the time once d has passed.
	After(d time.Duration) <-chan time.Time
	// AfterFunc calls f in its own goroutine once d has passed, unless the timer is stopped.
	AfterFunc(d time.Duration, f func()) Timer
	// NewTicker sends the time on its channel every d.
	NewTicker(d time.Duration) Ticker
}

// Timer is a timer armed by AfterFunc; *time.Timer is one.
type Timer interface {
	// Stop prevents the timer from firing; it reports whether it stopped it.
	Stop() bool
}

// Ticker delivers ticks until stopped.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Real is the wall clock (the fake one inside a synctest bubble).
type Real struct{}

func (Real) Now() time.Time                            { return time.Now() }
func (Real) After(d time.Duration) <-chan time.Time    { return time.After(d) }
func (Real) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
func (Real) NewTicker(d time.Duration) Ticker          { return realTicker{time.NewTicker(d)} }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }

// Or returns c, or Real when c is nil: what every component's Config defaulting does.
func Or(c Clock) Clock {
	if c == nil {
		return Real{}
	}
	return c
}

// WithTimeout is context.WithTimeout on c: the context is cancelled (with
// context.DeadlineExceeded as its cause) once d has passed on c, or when ctx ends.
func WithTimeout(ctx context.Context, c Clock, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := c.(Real); ok {
		return context.WithTimeout(ctx, d)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	t := c.AfterFunc(d, func() { cancel(context.DeadlineExceeded) })
	return ctx, func() { t.Stop(); cancel(context.Canceled) }
}
