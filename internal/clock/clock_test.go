package clock

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestRealInBubble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c Clock = Real{}
		start := c.Now()
		fired := make(chan time.Time, 1)
		c.AfterFunc(3*time.Second, func() { fired <- c.Now() })
		tk := c.NewTicker(time.Second)
		defer tk.Stop()
		for i := 1; i <= 3; i++ {
			if got := (<-tk.C()).Sub(start); got != time.Duration(i)*time.Second {
				t.Fatalf("tick %d at %v", i, got)
			}
		}
		if got := (<-fired).Sub(start); got != 3*time.Second {
			t.Fatalf("AfterFunc fired at %v", got)
		}
		if got := (<-c.After(2 * time.Second)).Sub(start); got != 5*time.Second {
			t.Fatalf("After fired at %v", got)
		}
	})
}

// manual is a clock whose AfterFunc timers fire only when fire is called: enough to test
// WithTimeout on a clock other than Real.
type manual struct {
	Real
	f func()
}

func (m *manual) AfterFunc(d time.Duration, f func()) Timer { m.f = f; return time.NewTimer(time.Hour) }

func TestWithTimeout(t *testing.T) {
	m := &manual{}
	ctx, cancel := WithTimeout(context.Background(), m, time.Second)
	defer cancel()
	if ctx.Err() != nil {
		t.Fatal("cancelled before the timer fired")
	}
	m.f()
	<-ctx.Done()
	if !errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
		t.Fatalf("cause %v, want DeadlineExceeded", context.Cause(ctx))
	}

	ctx2, cancel2 := WithTimeout(context.Background(), m, time.Second)
	cancel2()
	if !errors.Is(context.Cause(ctx2), context.Canceled) {
		t.Fatalf("cause after cancel %v, want Canceled", context.Cause(ctx2))
	}

	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := WithTimeout(context.Background(), Real{}, time.Minute)
		defer cancel()
		<-ctx.Done()
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatalf("real: %v", ctx.Err())
		}
	})
}
