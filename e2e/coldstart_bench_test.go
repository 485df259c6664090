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

// BenchmarkColdStart measures DESIGN.md's scale-from-zero budget: the time from a request for a
// revision at zero to its response, against the anchor of the same app started directly and
// called once it accepts connections (its own start-to-ready plus one request), in the same run.
// Reported: cold-p50-ms, anchor-p50-ms and their difference, the platform's overhead.
// COLD_LOG=FILE writes up's debug log (with a "BENCH request at" line per cold request) to FILE.
//
//	go test -run '^$' -bench ColdStart -benchtime 5x ./e2e/
func BenchmarkColdStart(b *testing.B) {
	// One revision that goes to zero after each request (window 6 s, grace 2 s): the realistic
	// path, where the autoscaler has decided 0 and a request must bring a replica back.
	u := startUp(b, zeroInitialScale+appService("cold", nil, nil, "", ""))
	var cold, anchor []time.Duration
	for b.Loop() {
		eventually(b, 60*time.Second, "revision at zero", func() (bool, string) {
			r, ok := u.revision(b, "cold-00001")
			return ok && r.Decision != nil && r.Decision.DeciderDesired == 0 && r.RunningReplicas == 0, fmt.Sprintf("%+v", r)
		})
		start := time.Now()
		fmt.Fprintf(u.out, "BENCH request at %s\n", start.UTC().Format("15:04:05.000000"))
		resp, err := u.do("GET", "cold.default.localhost", "/", nil)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("cold request: %v %v", err, resp)
		}
		resp.Body.Close()
		cold = append(cold, time.Since(start))
		anchor = append(anchor, directStart(b))
	}
	if f := os.Getenv("COLD_LOG"); f != "" {
		os.WriteFile(f, []byte(u.out.String()), 0o644)
	}
	c, a := median(cold), median(anchor)
	b.ReportMetric(float64(c.Microseconds())/1000, "cold-p50-ms")
	b.ReportMetric(float64(a.Microseconds())/1000, "anchor-p50-ms")
	b.ReportMetric(float64((c-a).Microseconds())/1000, "overhead-p50-ms")
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
