// Package testutil is what several packages' tests share: waiting on a condition with a
// deadline instead of sleeping a fixed time, and checking that goroutines settle.
package testutil

import (
	"runtime"
	"testing"
	"time"
)

// Poll calls cond until it returns true or within passes, and reports whether it held. Between
// calls it yields and waits a short back-off (1 ms doubling to 20 ms): cond is usually state in
// another process or goroutine that offers nothing to block on.
func Poll(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	wait := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		runtime.Gosched()
		time.Sleep(wait)
		wait = min(2*wait, 20*time.Millisecond)
	}
	return true
}

// Eventually fails tb unless cond holds within the given time; cond's string describes what it
// last saw, for the failure message.
func Eventually(tb testing.TB, within time.Duration, what string, cond func() (bool, string)) {
	tb.Helper()
	var last string
	if !Poll(within, func() bool {
		ok, state := cond()
		last = state
		return ok
	}) {
		tb.Fatalf("%s: not true within %v; last state: %s", what, within, last)
	}
}

// GoroutinesSettle waits up to within for the number of goroutines to fall to at most n and
// returns the stacks of all goroutines if it does not.
func GoroutinesSettle(within time.Duration, n int) (stacks string, ok bool) {
	if Poll(within, func() bool { return runtime.NumGoroutine() <= n }) {
		return "", true
	}
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)]), false
}
