package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"sort"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/testutil"
)

// BenchmarkColdStart measures DESIGN.md's scale-from-zero budget in both cases a request can
// find a revision with no replica, side by side with the anchor, in the same run:
//
//   - back from zero: a revision the KPA has taken to zero after traffic (window 6 s, grace
//     2 s); its decider stands at 0, so the gateway's poke decides at once, as in Knative.
//   - never active: a revision created at initial-scale 0 (allow-zero-initial-scale) that has
//     had no traffic, one new Service per iteration; its decider has no recommendation yet, as
//     every revision's has right after `infera up` restarts.
//
// The anchor is the same app started directly and called once it accepts connections (its own
// start-to-ready plus one request). Reported: p50 of each case, of the anchor, and each case's
// overhead (its p50 less the anchor's), the platform's share.
// COLD_LOG=FILE writes up's debug log (with a "BENCH ... request at" line per cold request) to
// FILE.
//
//	go test -run '^$' -bench ColdStart -benchtime 5x ./e2e/
func BenchmarkColdStart(b *testing.B) {
	u := startUp(b, zeroInitialScale+appService("cold", nil, nil, "", ""))
	var cold, fresh, anchor []time.Duration
	request := func(what, host string) time.Duration {
		start := time.Now()
		fmt.Fprintf(u.out, "BENCH %s request at %s\n", what, start.UTC().Format("15:04:05.000000"))
		resp, err := u.do("GET", host, "/", nil)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("%s request: %v %v\n%s", what, err, resp, u.out)
		}
		resp.Body.Close()
		return time.Since(start)
	}
	n := 0
	for b.Loop() {
		eventually(b, 60*time.Second, "revision at zero", func() (bool, string) {
			r, ok := u.revision(b, "cold-00001")
			return ok && r.Decision != nil && r.Decision.DeciderDesired == 0 && r.RunningReplicas == 0, fmt.Sprintf("%+v", r)
		})
		cold = append(cold, request("back-from-zero", "cold.default.localhost"))
		anchor = append(anchor, directStart(b))

		n++
		name := fmt.Sprintf("fresh%d", n)
		u.apply(b, appService(name, map[string]string{"autoscaling.knative.dev/initial-scale": "0"}, nil, "", ""))
		eventually(b, 60*time.Second, "new revision at zero", func() (bool, string) {
			r, ok := u.revision(b, name+"-00001")
			return ok && r.Routed && r.Decision != nil && r.Decision.Desired == 0 && r.Decision.DeciderDesired == -1 &&
				r.RunningReplicas == 0, fmt.Sprintf("%+v", r)
		})
		fresh = append(fresh, request("never-active", name+".default.localhost"))
	}
	if f := os.Getenv("COLD_LOG"); f != "" {
		os.WriteFile(f, []byte(u.out.String()), 0o644)
	}
	c, f, a := median(cold), median(fresh), median(anchor)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(c), "cold-p50-ms")
	b.ReportMetric(ms(f), "new-p50-ms")
	b.ReportMetric(ms(a), "anchor-p50-ms")
	b.ReportMetric(ms(c-a), "overhead-p50-ms")
	b.ReportMetric(ms(f-a), "new-overhead-p50-ms")
	b.Logf("back from zero %v, never active %v, anchor %v", cold, fresh, anchor)
}

func median(ds []time.Duration) time.Duration {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)/2]
}

// directStart starts the app as infera would (same binary, same env contract), waits until it
// accepts a connection, makes one request and stops it: the replica's own cost.
func directStart(b *testing.B) time.Duration {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	start := time.Now()
	cmd := exec.Command(appBin)
	cmd.Env = append(os.Environ(), appEnv+"=1", fmt.Sprintf("PORT=%d", port), "K_REVISION=anchor")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if !testutil.Poll(30*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		b.Fatal("anchor app did not listen")
	}
	resp, err := httpClient.Get("http://" + addr + "/")
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	return time.Since(start)
}
