package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/infera-dev/infera/internal/workload"
)

// Probe defaults and Knative's aggressive readiness numbers.
const (
	// kubelet defaults for a probe's zero fields (Kubernetes API defaulting).
	defaultPeriod           = 10 * time.Second
	defaultTimeout          = time.Second
	defaultFailureThreshold = 3
	// readyRecheckPeriod is how often an aggressive readiness probe is re-checked once ready.
	readyRecheckPeriod = time.Second
	// aggressivePollTimeout is queue-proxy's readiness PollTimeout: how long a failing check
	// is retried every 50 ms before the replica is reported not ready.
	aggressivePollTimeout = 10 * time.Second
	// startingProbeFirst is the first wait of a starting replica's aggressive readiness
	// probe; see startingBackoff.
	startingProbeFirst = time.Millisecond

	probeUserAgent = "kube-probe/1.35"
)

// newProbeTransport is the HTTP probes' transport: like the kubelet, a fresh connection per
// probe.
func newProbeTransport() *http.Transport {
	return &http.Transport{DisableKeepAlives: true, Proxy: nil}
}

// withDefaults fills a probe's zero fields with Kubernetes' defaults. A readiness probe with
// Period 0 stays aggressive.
func withDefaults(p workload.Probe, readiness bool) workload.Probe {
	aggressive := readiness && p.Period == 0
	if !aggressive {
		if p.Period <= 0 {
			p.Period = defaultPeriod
		}
		if p.Timeout <= 0 {
			p.Timeout = defaultTimeout
		}
		if p.FailureThreshold <= 0 {
			p.FailureThreshold = defaultFailureThreshold
		}
	}
	if p.SuccessThreshold <= 0 || !readiness {
		p.SuccessThreshold = 1
	}
	return p
}

// probe runs a replica's probes for incarnation inc until ctx ends. A liveness or startup
// failure is reported once on failed.
func (r *replica) probe(ctx context.Context, inc int, failed chan<- string) {
	defer r.grpc.close() // every check of this process has returned
	c := r.rev.Container
	if c.StartupProbe != nil {
		sp := withDefaults(*c.StartupProbe, false)
		if err := r.startupLoop(ctx, &sp); err != nil {
			if ctx.Err() == nil {
				failed <- "startup probe failed: " + err.Error()
			}
			return
		}
	}
	var wg sync.WaitGroup
	if c.LivenessProbe != nil {
		lp := withDefaults(*c.LivenessProbe, false)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := r.livenessLoop(ctx, &lp); err != nil && ctx.Err() == nil {
				failed <- "liveness probe failed: " + err.Error()
			}
		}()
	}
	rp := workload.Probe{Handler: workload.ProbeTCP} // Knative's default readiness probe
	if c.ReadinessProbe != nil {
		rp = *c.ReadinessProbe
	}
	if rp.Handler != workload.ProbeExec {
		rp = withDefaults(rp, true)
		r.readinessLoop(ctx, &rp, func(ok bool) { r.setReady(inc, ok) })
		wg.Wait()
		return
	}
	// Knative leaves an exec readiness probe to the kubelet (its schedule, Kubernetes'
	// defaults) and has queue-proxy probe the port over TCP with the probe's timing: the
	// replica is ready when both pass.
	tcp := withDefaults(workload.Probe{
		Handler: workload.ProbeTCP, InitialDelay: rp.InitialDelay, Period: rp.Period, Timeout: rp.Timeout,
		SuccessThreshold: rp.SuccessThreshold, FailureThreshold: rp.FailureThreshold,
	}, true)
	ex := rp
	if ex.Period == 0 {
		ex.Period = defaultPeriod
	}
	ex = withDefaults(ex, true)
	var mu sync.Mutex
	var both [2]bool
	report := func(i int) func(bool) {
		return func(ok bool) {
			mu.Lock()
			defer mu.Unlock()
			both[i] = ok
			r.setReady(inc, both[0] && both[1])
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.readinessLoop(ctx, &tcp, report(0))
	}()
	r.readinessLoop(ctx, &ex, report(1))
	wg.Wait()
}

// startingBackoff is how long a starting replica's aggressive readiness probe (periodSeconds
// 0) waits between checks: 1 ms, then each wait an eighth longer than the one before, up to
// Knative's 50 ms (AggressiveProbePeriod), which it reaches at the 35th wait, 0.43 s after
// the first check:
//
//	wait   1  1.13  1.27  1.42  1.60  1.80  2.03 ... 9.37 (after 67 ms) ... 43.3  48.8  50  50 ...  ms
//	check  0  1     2.13  3.39  4.81  6.42  8.22 ... 76.4                ... 382   431   481 ... ms
//
// The n-th wait ends 8 x (1.125^n - 1) ms after the first check, so each wait is one eighth of
// the time since the first check plus 1 ms: a replica that becomes ready T after its first
// check is seen by T + T/8 + 1 ms at the latest (3.5 ms late for an app ready in 20 ms, where
// Knative's 50 ms cadence is up to 50 ms late at any T).
//
// It is cheap: until the app listens, a check is a refused TCP connect on loopback, about
// 10 us (BenchmarkTCPProbeRefused), and the back-off makes 35 of them in its first 0.43 s,
// where Knative makes 9, before it settles at Knative's cadence. An HTTP or gRPC probe of an
// app that listens before it is ready costs one exchange per check instead, tens of
// microseconds, as many times. Knative's queue-proxy probes every 50 ms from the start
// (pkg/queue/readiness: retryInterval); infera probes faster only while a replica starts:
// once it has been ready, a replica that is not ready again is checked at Knative's cadence.
type startingBackoff struct{ next time.Duration }

// wait returns the next wait.
func (b *startingBackoff) wait() time.Duration {
	d := b.next
	if d == 0 {
		d = startingProbeFirst
	}
	b.next = min(d+d/8, workload.AggressiveProbePeriod)
	return d
}

func (r *replica) readinessLoop(ctx context.Context, p *workload.Probe, report func(ready bool)) {
	if !sleep(ctx, r.s.clock, p.InitialDelay) {
		return
	}
	if p.Period > 0 {
		r.standardReadiness(ctx, p, report)
		return
	}
	timeout := workload.AggressiveProbeTimeout
	count := 0
	starting := &startingBackoff{} // nil once the replica has been ready
	for {
		// Starting: on startingBackoff; not ready again: every 50 ms; until SuccessThreshold
		// successes in a row.
		for {
			if err := r.check(ctx, p, timeout); err == nil {
				count++
				if count >= p.SuccessThreshold {
					break
				}
			} else {
				count = 0
			}
			wait := workload.AggressiveProbePeriod
			if starting != nil {
				wait = starting.wait()
			}
			if !sleep(ctx, r.s.clock, wait) {
				return
			}
		}
		starting = nil
		report(true)
		// Ready: a check every second; a failing check polls every 50 ms for up to 10 s.
		for ready := true; ready; {
			if !sleep(ctx, r.s.clock, readyRecheckPeriod) {
				return
			}
			pollEnd := r.s.clock.Now().Add(aggressivePollTimeout)
			for {
				err := r.check(ctx, p, timeout)
				if ctx.Err() != nil {
					return
				}
				if err == nil {
					count++
					if count >= p.SuccessThreshold {
						break
					}
				} else {
					count = 0
				}
				if r.s.clock.Now().After(pollEnd) {
					r.s.log.Debug("readiness probe failed", "revision", string(r.rev.ID), "replica", r.name, "error", err)
					ready = false
					break
				}
				if !sleep(ctx, r.s.clock, workload.AggressiveProbePeriod) {
					return
				}
			}
		}
		report(false)
		count = 0
	}
}

func (r *replica) standardReadiness(ctx context.Context, p *workload.Probe, report func(ready bool)) {
	succ, fail, ready := 0, 0, false
	for {
		err := r.check(ctx, p, p.Timeout)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			succ, fail = succ+1, 0
			if !ready && succ >= p.SuccessThreshold {
				ready = true
				report(true)
			}
		} else {
			succ, fail = 0, fail+1
			if ready && fail >= p.FailureThreshold {
				ready = false
				report(false)
			}
		}
		if !sleep(ctx, r.s.clock, p.Period) {
			return
		}
	}
}

// livenessLoop returns the last error once FailureThreshold checks in a row failed.
func (r *replica) livenessLoop(ctx context.Context, p *workload.Probe) error {
	return r.failureLoop(ctx, p, false)
}

// startupLoop returns nil at the first success, or the last error once FailureThreshold
// checks in a row failed.
func (r *replica) startupLoop(ctx context.Context, p *workload.Probe) error {
	return r.failureLoop(ctx, p, true)
}

// failureLoop probes every Period after InitialDelay until FailureThreshold checks in a row
// fail (it returns the last error) or, with untilSuccess, until the first success (nil).
func (r *replica) failureLoop(ctx context.Context, p *workload.Probe, untilSuccess bool) error {
	if !sleep(ctx, r.s.clock, p.InitialDelay) {
		return ctx.Err()
	}
	fail := 0
	for {
		err := r.check(ctx, p, p.Timeout)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		switch {
		case err == nil && untilSuccess:
			return nil
		case err == nil:
			fail = 0
		default:
			if fail++; fail >= p.FailureThreshold {
				return err
			}
		}
		if !sleep(ctx, r.s.clock, p.Period) {
			return ctx.Err()
		}
	}
}

// check runs one probe against the replica.
func (r *replica) check(ctx context.Context, p *workload.Probe, timeout time.Duration) error {
	// The one wait not on the supervisor's clock: a probe's timeout bounds I/O that the
	// kernel, net, net/http, gRPC and os/exec time on the wall clock anyway, and a probe of a
	// hung app must end even while a test holds a fake clock still.
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	port := r.port
	if p.Port != 0 && p.Port != r.rev.Container.Port {
		port = int(p.Port)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	switch p.Handler {
	case workload.ProbeTCP:
		return tcpProbe(ctx, addr)
	case workload.ProbeHTTP:
		return httpProbe(ctx, r.s.probeTr, addr, p)
	case workload.ProbeGRPC:
		return r.grpc.check(ctx, p, addr)
	case workload.ProbeExec:
		return r.execProbe(ctx, p.Command)
	default:
		return fmt.Errorf("unknown probe handler %d", p.Handler)
	}
}

func tcpProbe(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

func httpProbe(ctx context.Context, tr http.RoundTripper, addr string, p *workload.Probe) error {
	if p.Scheme != "" && !strings.EqualFold(p.Scheme, "HTTP") {
		return fmt.Errorf("probe scheme %q is not supported (only HTTP)", p.Scheme)
	}
	url := "http://" + addr + "/" + strings.TrimPrefix(p.Path, "/")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", probeUserAgent)
	req.Header.Set("Accept", "*/*")
	req.Header.Set("K-Kubelet-Probe", "queue")
	for k, v := range p.Headers {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 10<<10))
	res.Body.Close()
	if res.StatusCode < 200 || res.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe got status code %d", res.StatusCode)
	}
	return nil
}

// grpcConns are the client connections of a replica's gRPC probes while one of its
// processes runs, one per probe: a probe's checks run one after another, so each reuses its
// probe's connection instead of dialling every 50 ms while the replica starts. A check that
// cannot reach the server (Unavailable) or times out drops the connection, so the next one
// dials afresh at its own time rather than after gRPC's reconnect back-off. r.probe closes
// them all when the process's probes end.
type grpcConns struct {
	mu    sync.Mutex
	conns map[*workload.Probe]*grpc.ClientConn // a probe's address is fixed for its replica
}

// check runs one gRPC probe p against addr.
func (g *grpcConns) check(ctx context.Context, p *workload.Probe, addr string) error {
	cc, err := g.conn(p, addr)
	if err != nil {
		return fmt.Errorf("gRPC health probe: %w", err)
	}
	err = grpcProbe(ctx, cc, p.Service)
	if c := status.Code(err); c == codes.Unavailable || c == codes.DeadlineExceeded {
		g.drop(p, cc)
	}
	return err
}

func (g *grpcConns) conn(p *workload.Probe, addr string) (*grpc.ClientConn, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if cc := g.conns[p]; cc != nil {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent(probeUserAgent))
	if err != nil {
		return nil, err
	}
	if g.conns == nil {
		g.conns = map[*workload.Probe]*grpc.ClientConn{}
	}
	g.conns[p] = cc
	return cc, nil
}

func (g *grpcConns) drop(p *workload.Probe, cc *grpc.ClientConn) {
	g.mu.Lock()
	if g.conns[p] == cc {
		delete(g.conns, p)
	}
	g.mu.Unlock()
	_ = cc.Close()
}

// close closes every connection; later checks dial again.
func (g *grpcConns) close() {
	g.mu.Lock()
	conns := g.conns
	g.conns = nil
	g.mu.Unlock()
	for _, cc := range conns {
		_ = cc.Close()
	}
}

// grpcProbe calls grpc.health.v1.Health/Check for service over cc; SERVING is success.
func grpcProbe(ctx context.Context, cc grpc.ClientConnInterface, service string) error {
	res, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	switch status.Code(err) {
	case codes.OK:
	case codes.Unimplemented:
		return fmt.Errorf("gRPC health probe: the server does not implement grpc.health.v1.Health: %w", err)
	case codes.NotFound: // the health protocol's answer to a service it does not know
		return fmt.Errorf("gRPC health probe: service %q unknown to the server (status SERVICE_UNKNOWN): %w", service, err)
	default:
		return fmt.Errorf("gRPC health probe: %w", err)
	}
	if st := res.GetStatus(); st != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("gRPC health probe: service unhealthy (status %s)", st)
	}
	return nil
}

// execProbe runs command beside the replica's program, where it sees what the program sees
// (its sandbox, its container); exit status 0 is success.
func (r *replica) execProbe(ctx context.Context, command []string) error {
	inst := r.current()
	if inst == nil {
		return errors.New("exec probe: the replica is not running")
	}
	var out limitedBuffer
	err := inst.Exec(ctx, command, &out)
	if ctx.Err() != nil {
		return fmt.Errorf("exec probe: %w", ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("exec probe: %w: %s", err, r.log.redactString(strings.TrimSpace(out.String())))
	}
	return nil
}

// limitedBuffer keeps the first 10 KiB written to it, as the kubelet keeps probe output.
type limitedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := 10<<10 - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
