package supervisor

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

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

	probeUserAgent = "kube-probe/1.35"
)

type probeTransports struct {
	h1  *http.Transport
	h2c *http.Transport
}

func newProbeTransports() probeTransports {
	var h2 http.Protocols
	h2.SetUnencryptedHTTP2(true)
	return probeTransports{
		// Like the kubelet: a fresh connection per probe.
		h1:  &http.Transport{DisableKeepAlives: true, Proxy: nil},
		h2c: &http.Transport{DisableKeepAlives: true, Proxy: nil, Protocols: &h2},
	}
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

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (r *replica) readinessLoop(ctx context.Context, p *workload.Probe, report func(ready bool)) {
	if !sleepCtx(ctx, p.InitialDelay) {
		return
	}
	if p.Period > 0 {
		r.standardReadiness(ctx, p, report)
		return
	}
	timeout := workload.AggressiveProbeTimeout
	count := 0
	for {
		// Starting (or not ready): every 50 ms until SuccessThreshold successes in a row.
		for {
			if err := r.check(ctx, p, timeout); err == nil {
				count++
				if count >= p.SuccessThreshold {
					break
				}
			} else {
				count = 0
			}
			if !sleepCtx(ctx, workload.AggressiveProbePeriod) {
				return
			}
		}
		report(true)
		// Ready: a check every second; a failing check polls every 50 ms for up to 10 s.
		for ready := true; ready; {
			if !sleepCtx(ctx, readyRecheckPeriod) {
				return
			}
			pollEnd := time.Now().Add(aggressivePollTimeout)
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
				if time.Now().After(pollEnd) {
					r.s.log.Debug("readiness probe failed", "revision", string(r.rev.ID), "replica", r.name, "error", err)
					ready = false
					break
				}
				if !sleepCtx(ctx, workload.AggressiveProbePeriod) {
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
		if !sleepCtx(ctx, p.Period) {
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
	if !sleepCtx(ctx, p.InitialDelay) {
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
		if !sleepCtx(ctx, p.Period) {
			return ctx.Err()
		}
	}
}

// check runs one probe against the replica.
func (r *replica) check(ctx context.Context, p *workload.Probe, timeout time.Duration) error {
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
		return httpProbe(ctx, r.s.probeTr.h1, addr, p)
	case workload.ProbeGRPC:
		return grpcProbe(ctx, r.s.probeTr.h2c, addr, p.Service)
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

// grpcProbe calls grpc.health.v1.Health/Check over HTTP/2 cleartext with a hand-encoded
// request: field 1 (service, string) of HealthCheckRequest.
func grpcProbe(ctx context.Context, tr http.RoundTripper, addr, service string) error {
	var msg []byte
	if service != "" {
		msg = append([]byte{0x0a}, binary.AppendUvarint(nil, uint64(len(service)))...)
		msg = append(msg, service...)
	}
	body := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(body[1:], uint32(len(msg)))
	body = append(body, msg...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/grpc.health.v1.Health/Check", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	req.Header.Set("User-Agent", probeUserAgent)
	res, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("gRPC health probe: %w", err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("gRPC health probe: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("gRPC health probe: HTTP status %d", res.StatusCode)
	}
	code := res.Trailer.Get("Grpc-Status")
	if code == "" {
		code = res.Header.Get("Grpc-Status") // trailers-only response
	}
	if code != "0" {
		if code == "12" {
			return errors.New("gRPC health probe: the server does not implement grpc.health.v1.Health")
		}
		return fmt.Errorf("gRPC health probe: grpc-status %s: %s", code, res.Trailer.Get("Grpc-Message")+res.Header.Get("Grpc-Message"))
	}
	status, err := decodeHealthResponse(data)
	if err != nil {
		return fmt.Errorf("gRPC health probe: %w", err)
	}
	if status != 1 {
		return fmt.Errorf("gRPC health probe: service unhealthy (status %s)", healthStatusName(status))
	}
	return nil
}

// decodeHealthResponse reads HealthCheckResponse.status (field 1, varint) from one
// length-prefixed message; an absent field is UNKNOWN (0).
func decodeHealthResponse(data []byte) (uint64, error) {
	if len(data) < 5 {
		return 0, errors.New("short response")
	}
	if data[0] != 0 {
		return 0, errors.New("compressed response not supported")
	}
	n := binary.BigEndian.Uint32(data[1:5])
	if uint32(len(data)-5) < n {
		return 0, errors.New("truncated response")
	}
	msg := data[5 : 5+n]
	var status uint64
	for len(msg) > 0 {
		key, k := binary.Uvarint(msg)
		if k <= 0 {
			return 0, errors.New("bad protobuf")
		}
		msg = msg[k:]
		switch key & 7 {
		case 0:
			v, k := binary.Uvarint(msg)
			if k <= 0 {
				return 0, errors.New("bad protobuf")
			}
			msg = msg[k:]
			if key>>3 == 1 {
				status = v
			}
		case 2:
			l, k := binary.Uvarint(msg)
			if k <= 0 || uint64(len(msg)-k) < l {
				return 0, errors.New("bad protobuf")
			}
			msg = msg[k+int(l):]
		case 1:
			if len(msg) < 8 {
				return 0, errors.New("bad protobuf")
			}
			msg = msg[8:]
		case 5:
			if len(msg) < 4 {
				return 0, errors.New("bad protobuf")
			}
			msg = msg[4:]
		default:
			return 0, errors.New("bad protobuf")
		}
	}
	return status, nil
}

func healthStatusName(s uint64) string {
	switch s {
	case 0:
		return "UNKNOWN"
	case 1:
		return "SERVING"
	case 2:
		return "NOT_SERVING"
	case 3:
		return "SERVICE_UNKNOWN"
	}
	return strconv.FormatUint(s, 10)
}

// execProbe runs command in the replica's sandbox context; exit status 0 is success.
func (r *replica) execProbe(ctx context.Context, command []string) error {
	sb := r.sandbox
	if sb == nil {
		sb = &sandbox{}
	}
	cmd, err := r.command(command, sb)
	if err != nil {
		return fmt.Errorf("exec probe: %w", err)
	}
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 100 * time.Millisecond
	if err := r.s.spawner.start(cmd); err != nil {
		return fmt.Errorf("exec probe: %w", err)
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() {
		waitExited(pid)
		close(exited)
	}()
	select {
	case <-exited:
	case <-ctx.Done():
	}
	// Leftovers of the probe (or the whole probe, on timeout); the leader is not reaped yet.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-exited
	err = cmd.Wait()
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
