package supervisor

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/testutil"
	"github.com/infera-dev/infera/internal/workload"
)

func TestStartingBackoff(t *testing.T) {
	us := func(n float64) time.Duration { return time.Duration(n * float64(time.Microsecond)) }
	tests := []struct {
		n    int // the n-th wait, from 1
		want time.Duration
		at   time.Duration // when it ends, after the first check
	}{
		{1, time.Millisecond, time.Millisecond},
		{2, us(1125), us(2125)},
		{3, us(1265.625), us(3390.625)},
		{4, 1423828 * time.Nanosecond, 4814453 * time.Nanosecond},
		{7, 2027284 * time.Nanosecond, 10245574 * time.Nanosecond},
		{10, 2886502 * time.Nanosecond, 17978550 * time.Nanosecond},
		{20, 9373393 * time.Nanosecond, 76360591 * time.Nanosecond},
		{34, 48756444 * time.Nanosecond, 430808099 * time.Nanosecond},
		{35, 50 * time.Millisecond, 480808099 * time.Nanosecond}, // Knative's cadence from here on
		{36, 50 * time.Millisecond, 530808099 * time.Nanosecond},
		{1000, 50 * time.Millisecond, 48730808099 * time.Nanosecond},
	}
	var b startingBackoff
	var at, prev time.Duration
	i := 0
	for n := 1; i < len(tests); n++ {
		d := b.wait()
		at += d
		if d < prev || d > workload.AggressiveProbePeriod {
			t.Fatalf("wait %d = %v after %v: not a back-off up to %v", n, d, prev, workload.AggressiveProbePeriod)
		}
		// Each wait is an eighth of the time since the first check plus 1 ms, until the cap.
		if d < workload.AggressiveProbePeriod {
			if bound := (at-d)/8 + time.Millisecond; d > bound+time.Microsecond {
				t.Fatalf("wait %d = %v, more than an eighth of %v plus 1 ms", n, d, at-d)
			}
		}
		prev = d
		if tc := tests[i]; tc.n == n {
			if d != tc.want || at != tc.at {
				t.Errorf("wait %d = %v ending at %v, want %v ending at %v", n, d, at, tc.want, tc.at)
			}
			i++
		}
	}
}

// pendingWait waits until the probe loop under test has armed its one timer on clk and
// returns how long it waits.
func pendingWait(t *testing.T, clk *testutil.FakeClock) time.Duration {
	t.Helper()
	var d time.Duration
	testutil.Eventually(t, 10*time.Second, "the probe loop's next wait", func() (bool, string) {
		p := clk.Pending()
		if len(p) != 1 {
			return false, strconv.Itoa(len(p)) + " timers pending"
		}
		d = p[0]
		return true, ""
	})
	return d
}

// TestReadinessSchedule runs an aggressive readiness loop on the fake clock against a real
// loopback port: while the replica starts, checks follow startingBackoff; once the port
// listens it is ready and re-checked every second; when it stops listening, checks every
// 50 ms for queue-proxy's 10 s, then not ready, and from then on every 50 ms, as Knative
// does (the back-off is for starting only). A probe with periodSeconds keeps the kubelet's
// schedule.
func TestReadinessSchedule(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // refused until the test listens again

	run := func(t *testing.T, p workload.Probe) (*testutil.FakeClock, <-chan bool, func()) {
		clk := testutil.NewFakeClock(fakeClockStart)
		r := &replica{rev: testRev("sched-00001"), port: port, s: &Supervisor{clock: clk, log: slog.New(slog.DiscardHandler)}}
		ctx, cancel := context.WithCancel(context.Background())
		reports := make(chan bool, 16)
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.readinessLoop(ctx, &p, func(ok bool) { reports <- ok })
		}()
		return clk, reports, func() { cancel(); <-done }
	}
	listen := func(t *testing.T) net.Listener {
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}

	t.Run("aggressive", func(t *testing.T) {
		clk, reports, stop := run(t, withDefaults(workload.Probe{Handler: workload.ProbeTCP}, true))
		defer stop()
		var want startingBackoff
		for n := 1; n <= 40; n++ {
			if got, w := pendingWait(t, clk), want.wait(); got != w {
				t.Fatalf("starting: wait %d = %v, want %v", n, got, w)
			}
			clk.Advance(time.Hour) // fires the one timer; the next is armed from the new now
		}
		l := listen(t)
		pendingWait(t, clk)
		clk.Advance(time.Hour)
		if !<-reports {
			t.Fatal("reported not ready while listening")
		}
		if got := pendingWait(t, clk); got != readyRecheckPeriod {
			t.Fatalf("ready: next check in %v, want %v", got, readyRecheckPeriod)
		}
		l.Close()
		clk.Advance(readyRecheckPeriod)
		for polls := 0; len(reports) == 0; polls++ {
			if got := pendingWait(t, clk); got != workload.AggressiveProbePeriod {
				t.Fatalf("failing while ready: poll %d in %v, want %v", polls, got, workload.AggressiveProbePeriod)
			}
			if polls > 2*int(aggressivePollTimeout/workload.AggressiveProbePeriod) {
				t.Fatal("still ready long after queue-proxy's poll timeout")
			}
			clk.Advance(workload.AggressiveProbePeriod)
		}
		if <-reports {
			t.Fatal("reported ready with nothing listening")
		}
		for n := 1; n <= 5; n++ {
			if got := pendingWait(t, clk); got != workload.AggressiveProbePeriod {
				t.Fatalf("not ready again: wait %d = %v, want Knative's %v", n, got, workload.AggressiveProbePeriod)
			}
			clk.Advance(workload.AggressiveProbePeriod)
		}
	})

	t.Run("periodSeconds set", func(t *testing.T) {
		clk, reports, stop := run(t, withDefaults(workload.Probe{Handler: workload.ProbeTCP, Period: 3 * time.Second}, true))
		defer stop()
		for n := 1; n <= 3; n++ {
			if got := pendingWait(t, clk); got != 3*time.Second {
				t.Fatalf("wait %d = %v, want the probe's 3s", n, got)
			}
			clk.Advance(3 * time.Second)
		}
		l := listen(t)
		defer l.Close()
		pendingWait(t, clk)
		clk.Advance(3 * time.Second)
		if !<-reports {
			t.Fatal("reported not ready while listening")
		}
	})
}

// BenchmarkTCPProbeRefused is one check of a starting replica's default readiness probe before
// the app listens: a TCP connect to a loopback port nobody listens on.
func BenchmarkTCPProbeRefused(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	b.ReportAllocs()
	for b.Loop() {
		ctx, cancel := context.WithTimeout(context.Background(), workload.AggressiveProbeTimeout)
		if err := tcpProbe(ctx, addr); err == nil {
			b.Fatal("connected to a closed port")
		}
		cancel()
	}
}
