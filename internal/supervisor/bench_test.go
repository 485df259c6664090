package supervisor

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/infera-dev/infera/internal/workload"
)

// Not parallel: goroutine counts are only meaningful while no other test starts any.
func TestShutdownLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	s, err := New(Config{Dir: t.TempDir(), Gateway: &fakeGateway{}})
	if err != nil {
		t.Fatal(err)
	}
	rev := testRev("leak-00001")
	rev.Container.LivenessProbe = &workload.Probe{Handler: workload.ProbeTCP, Period: 20 * time.Millisecond}
	rev.Container.StartupProbe = &workload.Probe{Handler: workload.ProbeHTTP, Path: "/ready", Period: 20 * time.Millisecond, FailureThreshold: 1000}
	s.Scale(rev, 2)
	waitFor(t, "2 ready", func() bool { return s.Status(rev.ID).Ready == 2 })
	s.Scale(rev, 1)
	waitFor(t, "1 replica", func() bool { return len(s.Replicas()) == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}

// BenchmarkStartToReady is one replica's cycle: process start, default TCP readiness,
// endpoints, drain and stop. The app (the test binary) dominates; compare with
// BenchmarkProcessOnly for the supervisor's share.
func BenchmarkStartToReady(b *testing.B) {
	changed := make(chan struct{}, 1)
	s, err := New(Config{Dir: b.TempDir(), Gateway: &fakeGateway{}, OnChange: func(workload.RevisionID) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	rev := testRev("bench-00001")
	rev.Timeout = time.Second
	b.ReportAllocs()
	for b.Loop() {
		s.Scale(rev, 1)
		for s.Status(rev.ID).Ready != 1 {
			<-changed
		}
		s.Scale(rev, 0)
		for len(s.Replicas()) != 0 {
			select {
			case <-changed:
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
}

// BenchmarkProcessOnly starts the same binary and waits until it listens, without the
// supervisor: the floor under BenchmarkStartToReady.
func BenchmarkProcessOnly(b *testing.B) {
	rev := testRev("floor-00001")
	for b.Loop() {
		port, _ := freePort()
		r := &replica{rev: rev, port: port, s: &Supervisor{}}
		cmd, err := processRuntime{r.s}.command(rev.Container.Command, "", processEnv(Launch{Env: r.launchEnv()}, &sandbox{}), &sandbox{})
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		var bo startingBackoff // the anchor probes at the supervisor's cadence: the behaviour compared
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			err := tcpProbe(ctx, addr)
			cancel()
			if err == nil {
				break
			}
			time.Sleep(bo.wait()) // the anchor polls on the probe's own back-off: what it measures against
		}
		cmd.Process.Kill()
		cmd.Wait()
	}
}

func BenchmarkHTTPProbe(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	tr := newProbeTransport()
	p := &workload.Probe{Path: "/healthz"}
	addr := srv.Listener.Addr().String()
	b.ReportAllocs()
	for b.Loop() {
		if err := httpProbe(context.Background(), tr, addr, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGRPCProbe is one check of a gRPC probe over its kept connection; "fresh" dials a
// new one each time, as a probe does after it lost the server.
func BenchmarkGRPCProbe(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go gs.Serve(ln)
	defer gs.Stop()
	addr := ln.Addr().String()
	for _, fresh := range []bool{false, true} {
		b.Run(map[bool]string{false: "kept", true: "fresh"}[fresh], func(b *testing.B) {
			var g grpcConns
			defer g.close()
			p := &workload.Probe{Handler: workload.ProbeGRPC}
			b.ReportAllocs()
			for b.Loop() {
				if err := g.check(context.Background(), p, addr); err != nil {
					b.Fatal(err)
				}
				if fresh {
					g.close()
				}
			}
		})
	}
}

func BenchmarkLogSinkWrite(b *testing.B) {
	l, err := newLogSink(filepath.Join(b.TempDir(), "r.log"), 1<<20, 10<<20, []string{"secret-token"})
	if err != nil {
		b.Fatal(err)
	}
	defer l.close()
	line := []byte(strings.Repeat("x", 99) + "\n")
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		l.Write(line)
	}
}
