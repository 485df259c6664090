package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/infera-dev/infera/internal/clock"
	"github.com/infera-dev/infera/internal/workload"
)

// errClientGone: the client went away; nothing is written back (logged as 499, nginx's code).
var errClientGone = errors.New("gateway: client closed request")

const statusClientClosed = 499

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// call is one request's state from arrival to the end of its response. It embeds its waiter,
// so holding a request in a queue allocates nothing more than the channel it waits on.
type call struct {
	waiter
	g      *Gateway
	w      http.ResponseWriter
	r      *http.Request
	rev    *revision
	cfg    workload.Revision
	ctx    context.Context
	cancel context.CancelCauseFunc
	body   *retryBody

	mu      sync.Mutex
	started bool // response headers are out (to the client)
	// progressed: the response started as an event stream of cold-start comments
	// (X-Infera-Progress: sse); the replica's stream follows without its headers.
	progressed bool
	idle       clock.Timer // the idle timeout's current timer; onIdleTimeout arms the next one
	idleOff    bool        // the idle timeout is off for good (request over, websocket): no re-arming

	last atomic.Int64 // Config.Clock time of the last write to the client, in Unix ns; 0: none yet

	mx   *revMetrics
	code int
	size int64
	ep   *endpoint
}

// isKubeletProbe is Knative's netheader.IsKubeletProbe: a kubelet probe, which queue-proxy
// leaves out of the autoscaling statistics (queue.ProxyHandler).
func isKubeletProbe(r *http.Request) bool {
	return r.Header.Get("K-Kubelet-Probe") != "" || strings.HasPrefix(r.Header.Get("User-Agent"), "kube-probe/")
}

// isProbe is Knative's netheader.IsProbe: a kubelet probe or a Knative network probe
// (K-Network-Probe), which queue-proxy leaves out of the request metrics, and out of the
// request log unless logging.enable-probe-request-log is true.
func isProbe(r *http.Request) bool {
	return isKubeletProbe(r) || r.Header.Get("K-Network-Probe") != ""
}

// ServeHTTP routes, holds, balances, limits and forwards one request.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.enter()
	defer g.leave()
	start := g.clock.Now()
	c := &call{g: g, w: w, r: r}
	defer c.finish(start)
	// A proxy streams the replica's response while the request body may still be on its way
	// to the replica (the transport reads to EOF after the last byte, and a stream starts
	// before that under load). Without full duplex, net/http's HTTP/1 server makes the request
	// body unreadable once the response is flushed, the transport then drops the replica's
	// connection, and the stream is cut after its first write. HTTP/2 is full duplex already
	// (the call then returns an error, which means nothing to do).
	if max := g.cfg.MaxBodyBytes; max > 0 && r.Body != nil && r.Body != http.NoBody {
		if r.ContentLength > max {
			c.fail(ErrBodyTooLarge)
			return
		}
		// With a limit, the body is read whole (at most the limit) before anything is sent
		// on: no replica ever sees part of a body that is refused, and the 413 goes out with
		// net/http's own handling of the rest of the body (read and dropped, then the
		// connection closed). What is forwarded then has a Content-Length.
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
		if err != nil {
			c.fail(c.cause(err))
			return
		}
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(data)), int64(len(data))
		r.TransferEncoding = nil
	}
	_ = http.NewResponseController(w).EnableFullDuplex()
	if g.serveModels(c) { // the gateway's own GET /v1/models, on a Host no route has
		return
	}
	id, err := g.resolve(r)
	if err != nil {
		c.fail(err)
		return
	}
	rev := g.revisionFor(id, false)
	if rev == nil {
		c.fail(ErrRevisionUnknown)
		return
	}
	probe := isKubeletProbe(r)
	cfg, mx, err := rev.begin(start, probe)
	c.rev, c.cfg, c.mx = rev, cfg, mx
	if err != nil {
		c.fail(err)
		return
	}
	defer func() { rev.end(g.clock.Now(), probe) }()
	c.serve()
}

// finish records a finished request in the metrics and the request log. Probes are left out
// of the metrics, and the request log decides on them (LogProbeRequests), as in Knative; a
// request that found no revision is logged with an empty .Revision and not measured.
func (c *call) finish(start time.Time) {
	if c.code == 0 {
		c.code = http.StatusOK // the replica wrote nothing at all: net/http answers 200
	}
	latency := c.g.clock.Now().Sub(start)
	if c.rev != nil && !isProbe(c.r) {
		c.mx.observe(c.code, latency, c.viaActivator)
	}
	l := c.g.requestLog.Load()
	if l == nil {
		return
	}
	rv := &RequestLogRevision{}
	if c.rev != nil {
		rv = &RequestLogRevision{Name: c.cfg.Name, Namespace: c.cfg.Namespace, Service: c.cfg.Service, Configuration: c.cfg.Configuration}
		if c.ep != nil {
			rv.PodName, rv.PodIP = c.ep.replica, podIP(c.ep.addr)
		}
	}
	l.Log(&RequestLogInput{
		Request:  c.r,
		Response: &RequestLogResponse{Code: c.code, Size: int(c.size), Latency: latency.Seconds()},
		Revision: rv,
		TraceID:  traceID(c.r.Header),
	})
}

// serve runs the request under its timeouts: acquire a slot, forward, retry on a refused
// connection.
func (c *call) serve() {
	ctx, cancel := context.WithCancelCause(c.r.Context())
	defer cancel(nil)
	c.ctx, c.cancel = ctx, cancel
	deadline := c.g.clock.AfterFunc(c.cfg.Timeout, func() { cancel(errDeadline) })
	defer deadline.Stop()
	if t := c.cfg.ResponseStartTimeout; t > 0 {
		st := c.g.clock.AfterFunc(t, c.onResponseStartTimeout)
		defer st.Stop()
	}
	if t := c.cfg.IdleTimeout; t > 0 {
		c.armIdle(t)
		defer c.stopIdle()
	}
	if c.r.Body != nil && c.r.Body != http.NoBody {
		c.body = &retryBody{rc: c.r.Body}
	}
	if strings.EqualFold(c.r.Header.Get(ProgressHeader), "sse") && c.g.cfg.ColdStartProgress != nil {
		c.waiter.progress = c.sendProgress
	}
	for {
		ep, err := c.rev.acquire(ctx, &c.waiter)
		if err != nil {
			c.fail(c.cause(err))
			return
		}
		c.ep = ep
		if !c.forwardOn(ep) {
			return
		}
		c.exclude = append(c.exclude, ep)
	}
}

// onResponseStartTimeout ends a request whose replica sent no headers in time (Knative's
// responseStartTimeoutSeconds, counted from arrival like the activator does).
func (c *call) onResponseStartTimeout() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started {
		c.cancel(errResponseStart)
	}
}

// onIdleTimeout ends a request that wrote nothing to the client for IdleTimeout (counted from
// arrival until the first write, as Knative's timeout handler does).
func (c *call) onIdleTimeout() {
	if c.ctx.Err() != nil {
		return // the request has ended: do not re-arm
	}
	idle := c.cfg.IdleTimeout
	if last := c.last.Load(); last != 0 {
		if since := c.g.clock.Now().Sub(time.Unix(0, last)); since < idle {
			c.armIdle(idle - since)
			return
		}
	}
	c.cancel(errIdle)
}

// armIdle arms the idle timeout's timer for d, unless stopIdle has turned it off.
func (c *call) armIdle(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.idleOff {
		c.idle = c.g.clock.AfterFunc(d, c.onIdleTimeout)
	}
}

// stopIdle turns the idle timeout off for good: its timer is stopped and not re-armed.
func (c *call) stopIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.idleOff = true
	if c.idle != nil {
		c.idle.Stop()
	}
}

// touch records a write to the client for the idle timeout.
func (c *call) touch() {
	if c.cfg.IdleTimeout > 0 {
		c.last.Store(max(c.g.clock.Now().UnixNano(), 1))
	}
}

// cause turns an error seen while the request's context may have ended into the error to
// answer with.
func (c *call) cause(err error) error {
	if c.ctx != nil && c.ctx.Err() != nil {
		switch context.Cause(c.ctx) {
		case errDeadline, errResponseStart, errIdle:
			return ErrRequestTimeout
		}
		if c.r.Context().Err() != nil {
			return errClientGone
		}
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return ErrBodyTooLarge
	case errors.Is(err, ErrActivatorQueueFull), errors.Is(err, ErrRequestQueueFull),
		errors.Is(err, ErrRevisionRemoved), errors.Is(err, ErrRevisionUnknown),
		errors.Is(err, ErrNoRoute), errors.Is(err, ErrBodyTooLarge):
		return err
	}
	c.g.log.Debug("gateway: forward failed", "revision", c.cfg.ID, "error", err)
	return ErrBadGateway
}

// forwardOn is forward with the replica's slot given back however it ends (a broken stream
// ends in panic(http.ErrAbortHandler)).
func (c *call) forwardOn(ep *endpoint) (retry bool) {
	defer c.rev.release(ep)
	return c.forward(ep)
}

// forward sends the request to one replica and copies the response back. It returns true
// when the connection to the replica failed before any byte of the request was sent, so the
// request can go to another replica.
func (c *call) forward(ep *endpoint) (retry bool) {
	out := c.outRequest(ep)
	var rt http.RoundTripper = c.g.h1
	if c.cfg.Container.PortName == "h2c" {
		rt = c.g.h2
	}
	res, err := rt.RoundTrip(out)
	if err != nil {
		if c.ctx.Err() == nil && (c.body == nil || !c.body.touched.Load()) && isDialError(err) {
			c.g.log.Debug("gateway: replica refused, retrying", "revision", c.cfg.ID, "replica", ep.replica, "error", err)
			return true
		}
		c.fail(c.cause(err))
		return false
	}
	defer res.Body.Close()
	if c.held && c.g.cfg.OnFirstByte != nil {
		c.g.cfg.OnFirstByte(c.rev.id, ep.replica, c.g.clock.Now())
	}
	if res.StatusCode == http.StatusSwitchingProtocols {
		c.upgrade(res)
		return false
	}

	h := c.w.Header()
	c.mu.Lock()
	progressed := c.progressed
	c.mu.Unlock()
	if progressed {
		// The client has had 200 and an event stream; the replica's own answer follows.
		if res.StatusCode != http.StatusOK {
			n, _ := fmt.Fprintf(c.w, ": infera replica answered %d\n\n", res.StatusCode)
			c.size += int64(n)
		}
		res.ContentLength = -1 // a stream from here on
	} else {
		copyHeader(h, res.Header)
		removeHopByHop(h, false)
		if !c.start(res.StatusCode) {
			return false
		}
	}
	flusher, _ := c.w.(http.Flusher)
	// A response of unknown length (SSE, chunked) is a stream: its headers go out at once and
	// every write is flushed. One of known length is flushed after every write but its last,
	// which the end of the handler sends with the headers: one write for a small response.
	stream := res.ContentLength < 0
	if stream && flusher != nil {
		flusher.Flush()
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	for {
		n, rerr := res.Body.Read(buf)
		if n > 0 {
			c.touch()
			wn, werr := c.w.Write(buf[:n])
			c.size += int64(wn)
			if werr != nil {
				return false // the client went away
			}
			if flusher != nil && (stream || c.size < res.ContentLength) {
				flusher.Flush()
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			c.fail(c.cause(rerr))
			return false
		}
	}
	for k, vv := range res.Trailer {
		h[http.TrailerPrefix+k] = vv
	}
	return false
}

// start writes the response status unless the request's context has ended, in which case it
// answers with that ending instead.
func (c *call) start(code int) bool {
	c.mu.Lock()
	if c.ctx.Err() != nil {
		c.mu.Unlock()
		c.fail(c.cause(c.ctx.Err()))
		return false
	}
	c.started = true
	c.code = code
	c.w.WriteHeader(code)
	c.mu.Unlock()
	c.touch()
	return true
}

// fail answers with err. Before the response started, that is a status and a short body; after,
// a timeout ends the body with Knative's "request timeout" and anything else breaks the stream.
func (c *call) fail(err error) {
	if err == errClientGone {
		if c.code == 0 {
			c.code = statusClientClosed
		}
		return
	}
	c.mu.Lock()
	started, progressed := c.started, c.progressed
	c.started = true
	c.mu.Unlock()
	if progressed {
		// An event stream of cold-start comments: the failure is one more comment.
		n, _ := fmt.Fprintf(c.w, ": infera error %s\n\n", err)
		c.size += int64(n)
		return
	}
	if started {
		if err == ErrRequestTimeout {
			// Knative's timeout handler writes its body after what was sent and ends.
			n, _ := io.WriteString(c.w, ErrRequestTimeout.Error())
			c.size += int64(n)
			return
		}
		if c.r.Context().Value(http.ServerContextKey) != nil {
			panic(http.ErrAbortHandler) // the replica broke a started response: let the client see it
		}
		return
	}
	c.code = writeError(c.w, err)
}

// outRequest is the request to the replica: same method, path, query, Host and body;
// hop-by-hop headers stripped; X-Forwarded-For and -Proto set.
func (c *call) outRequest(ep *endpoint) *http.Request {
	r := c.r
	out := r.WithContext(c.ctx)
	out.URL = &url.URL{Scheme: "http", Host: ep.addr, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	out.RequestURI = ""
	out.Close = false
	out.Header = r.Header.Clone()
	if out.Header == nil {
		out.Header = http.Header{}
	}
	upgrade := upgradeType(r.Header)
	removeHopByHop(out.Header, true)
	if upgrade != "" {
		out.Header.Set("Connection", "Upgrade")
		out.Header.Set("Upgrade", upgrade)
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior := r.Header.Values("X-Forwarded-For"); len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		out.Header.Set("X-Forwarded-For", ip)
	}
	if out.Header.Get("X-Forwarded-Proto") == "" {
		proto := "http"
		if r.TLS != nil {
			proto = "https"
		}
		out.Header.Set("X-Forwarded-Proto", proto)
	}
	if c.body != nil {
		out.Body = c.body
	} else {
		out.Body = nil
	}
	return out
}

// upgrade completes a protocol switch (websocket): the client's connection and the replica's
// are joined byte for byte until either side closes or the revision timeout passes.
func (c *call) upgrade(res *http.Response) {
	back, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		c.fail(ErrBadGateway)
		return
	}
	c.stopIdle() // an open websocket is not idle-timed; the revision timeout still holds
	conn, brw, err := http.NewResponseController(c.w).Hijack()
	if err != nil {
		c.fail(ErrBadGateway)
		return
	}
	defer conn.Close()
	c.mu.Lock()
	c.started, c.code = true, res.StatusCode
	c.mu.Unlock()
	copyHeader(c.w.Header(), res.Header)
	res.Header = c.w.Header()
	res.Body = nil
	if err := res.Write(brw); err != nil {
		return
	}
	if err := brw.Flush(); err != nil {
		return
	}
	stop := context.AfterFunc(c.ctx, func() { conn.Close(); back.Close() })
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(back, brw) //nolint:errcheck // ends when either side closes
		back.Close()
		conn.Close()
	}()
	n, _ := io.Copy(conn, back)
	c.size += n
	conn.Close()
	back.Close()
	<-done
}

// retryBody passes the request body through without letting the transport close it, and
// records whether any of it was read (then the request can no longer be retried).
type retryBody struct {
	rc      io.ReadCloser
	touched atomic.Bool
}

func (b *retryBody) Read(p []byte) (int, error) {
	b.touched.Store(true)
	return b.rc.Read(p)
}

func (b *retryBody) Close() error { return nil } // the server closes the request body

func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// Hop-by-hop headers (RFC 9110 7.6.1) and the proxy ones net/http/httputil also drops.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
	"Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopByHop(h http.Header, request bool) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	keepTE := request && hasToken(h.Values("Te"), "trailers") // gRPC needs "TE: trailers"
	for _, k := range hopHeaders {
		h.Del(k)
	}
	if keepTE {
		h.Set("Te", "trailers")
	}
}

func hasToken(vals []string, token string) bool {
	for _, v := range vals {
		for sf := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(sf), token) {
				return true
			}
		}
	}
	return false
}

func upgradeType(h http.Header) string {
	if !hasToken(h.Values("Connection"), "upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

func copyHeader(dst, src http.Header) {
	for k, vv := range src {
		dst[k] = append(dst[k][:0:0], vv...)
	}
}

// writeError is the one place a gateway error becomes a status and a body.
func writeError(w http.ResponseWriter, err error) int {
	h := w.Header()
	for k := range h { // drop whatever a replica's response had put there
		delete(h, k)
	}
	code, kind := http.StatusBadGateway, "bad_gateway"
	switch {
	case errors.Is(err, ErrRequestTimeout):
		// Knative queue-proxy: 504 with the body "request timeout".
		w.WriteHeader(http.StatusGatewayTimeout)
		io.WriteString(w, ErrRequestTimeout.Error()) //nolint:errcheck
		return http.StatusGatewayTimeout
	case errors.Is(err, ErrRequestQueueFull):
		// Knative queue-proxy: http.Error(w, "pending request queue full", 503).
		http.Error(w, ErrRequestQueueFull.Error(), http.StatusServiceUnavailable)
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrModelNotFound):
		// OpenAI's answer for an unknown model, which its clients recognise.
		h.Set("Content-Type", "application/json")
		h.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":{"message":`+jsonString(err.Error())+`,"type":"invalid_request_error","param":"model","code":"model_not_found"}}`+"\n") //nolint:errcheck
		return http.StatusNotFound
	case errors.Is(err, ErrNoRoute):
		code, kind = http.StatusNotFound, "not_found"
	case errors.Is(err, ErrActivatorQueueFull), errors.Is(err, ErrRevisionUnknown), errors.Is(err, ErrRevisionRemoved):
		code, kind = http.StatusServiceUnavailable, "unavailable"
		h.Set("Retry-After", "1")
	case errors.Is(err, ErrBodyTooLarge):
		code, kind = http.StatusRequestEntityTooLarge, "request_too_large"
	}
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	io.WriteString(w, `{"error":{"message":`+jsonString(strings.TrimPrefix(err.Error(), "gateway: "))+`,"type":"`+kind+`"}}`+"\n") //nolint:errcheck
	return code
}

func jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte("0123456789abcdef"[r>>4])
			b.WriteByte("0123456789abcdef"[r&0xf])
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// ProgressHeader on a request asks for its cold start as it happens: with "sse", while the
// request is held the gateway answers 200 with an event stream of comment lines (": infera
// cold-start phase=... ..."), then the replica's own stream. OpenAI clients skip comments.
const ProgressHeader = "X-Infera-Progress"

// ProgressEvery is how often a held request with ProgressHeader hears of its cold start.
const ProgressEvery = time.Second

// sendProgress writes one cold-start comment to a held request, starting its event stream.
func (c *call) sendProgress() {
	msg := c.g.cfg.ColdStartProgress(c.rev.id)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx.Err() != nil || (c.started && !c.progressed) {
		return
	}
	if !c.started {
		h := c.w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		c.w.WriteHeader(http.StatusOK)
		c.started, c.progressed, c.code = true, true, http.StatusOK
	}
	n, _ := fmt.Fprintf(c.w, ": infera cold-start %s\n\n", strings.ReplaceAll(msg, "\n", " "))
	c.size += int64(n)
	if f, ok := c.w.(http.Flusher); ok {
		f.Flush()
	}
}
