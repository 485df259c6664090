package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/infera-dev/infera/internal/clock"
	"github.com/infera-dev/infera/internal/workload"
)

// DefaultQueueDepth is the activator queue per revision when Config.QueueDepth is 0. It is
// Knative's activator breaker queue depth (breakerQueueDepth in pkg/activator/net).
const DefaultQueueDepth = 10000

// ModelPeekBytes bounds how much of a POST /v1/... body is read to find its "model" field.
const ModelPeekBytes = 1 << 20

// Sentinel errors; each maps to one HTTP status in writeError, and nowhere else.
var (
	// ErrNoRoute: no route matches the Host header or the OpenAI model (404).
	ErrNoRoute = errors.New("gateway: no route")
	// ErrRevisionUnknown: the route points at a revision the gateway was not told about (503).
	ErrRevisionUnknown = errors.New("gateway: revision not known")
	// ErrRevisionRemoved: the revision was removed while the request waited (503).
	ErrRevisionRemoved = errors.New("gateway: revision removed")
	// ErrActivatorQueueFull: the revision's activator queue holds QueueDepth requests (503).
	ErrActivatorQueueFull = errors.New("gateway: activator queue full")
	// ErrRequestQueueFull: the replica's breaker (CC in flight + 10 x CC queued) is full (503).
	// The text is Knative queue-proxy's.
	ErrRequestQueueFull = errors.New("pending request queue full")
	// ErrRequestTimeout: timeoutSeconds, responseStartTimeoutSeconds or idleTimeoutSeconds
	// passed (504). The text is Knative queue-proxy's timeout body.
	ErrRequestTimeout = errors.New("request timeout")
	// ErrBodyTooLarge: the request body is over Config.MaxBodyBytes (413).
	ErrBodyTooLarge = errors.New("gateway: request body too large")
	// ErrBadGateway: the replica could not be reached or broke the exchange (502).
	ErrBadGateway = errors.New("gateway: bad gateway")
	// ErrModelNotFound: GET /v1/models/{id} on the gateway's own address names no model it
	// routes (404, in OpenAI's shape: invalid_request_error, param model, code model_not_found).
	ErrModelNotFound = errors.New("gateway: model not found")
)

// Causes of a request's context ending, for telling the timeouts apart.
var (
	errDeadline      = errors.New("gateway: revision timeout")
	errResponseStart = errors.New("gateway: response start timeout")
	errIdle          = errors.New("gateway: idle timeout")
)

// Config is what a Gateway is built from. Zero values take the defaults documented per field.
type Config struct {
	QueueDepth   int   // activator queue per revision; default DefaultQueueDepth
	MaxBodyBytes int64 // 0 = unlimited; a larger request body gets 413
	// ColdStartProgress says where a revision's cold start is ("phase=image pulling ...: 12 MiB
	// of 40 MiB"), for held requests that ask with X-Infera-Progress: sse; nil: none is sent.
	ColdStartProgress func(id workload.RevisionID) string
	// Clock is the gateway's one time source: arrival and latency times, the statistics'
	// buckets, idle time, and the timers of the request timeouts. Default clock.Real.
	Clock  clock.Clock
	Logger *slog.Logger
	// OnDemand is called at most once per cold episode (from the first request that finds the
	// revision with no ready endpoint until endpoints appear), on the request's goroutine and
	// outside every lock: it must not block (a non-blocking channel send is the intended use).
	// The call stands for the stat Knative's activator sends at once for such a request: one
	// request in flight and one arrival, at the time of the call. That request is also in the
	// revision's next Collect; the autoscaler, which records both, leaves it out there.
	OnDemand func(workload.RevisionID)
	// OnFirstByte is called when a request that was held for lack of a ready replica (the
	// wait OnDemand reports) gets its response's first byte from a replica: the status line,
	// with replica's name and the time on Clock. It is called once per such request, on its
	// goroutine and outside every lock: it must not block. Requests that found a ready replica
	// never call it.
	OnFirstByte func(id workload.RevisionID, replica string, at time.Time)
	RequestLog  *RequestLogger        // optional: one line per request
	Registerer  prometheus.Registerer // optional: Knative's request metrics
}

// Gateway is activator, load balancer and queue-proxy breaker in one hop. It is an
// http.Handler; see the package documentation for the request path.
type Gateway struct {
	cfg     Config
	log     *slog.Logger
	clock   clock.Clock
	metrics *metrics

	routes atomic.Pointer[table]

	revMu sync.RWMutex
	revs  map[workload.RevisionID]*revision

	h1 *http.Transport  // HTTP/1.1 to replicas
	h2 *http2.Transport // HTTP/2 cleartext (prior knowledge) to "h2c" replicas

	requestLog atomic.Pointer[RequestLogger] // Config.RequestLog, replaced by SetRequestLog

	active  atomic.Int64 // requests inside ServeHTTP (held ones included)
	drainMu sync.Mutex
	drains  []chan struct{}
}

// New returns a Gateway with no routes and no revisions.
func New(cfg Config) *Gateway {
	if cfg.QueueDepth <= 0 {
		cfg.QueueDepth = DefaultQueueDepth
	}
	cfg.Clock = clock.Or(cfg.Clock)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	// The dial, keep-alive and idle-connection timeouts below are socket deadlines kept by net
	// and net/http on the wall clock; no request-visible behaviour is timed by them.
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	g := &Gateway{
		cfg:   cfg,
		log:   cfg.Logger,
		clock: cfg.Clock,
		revs:  make(map[workload.RevisionID]*revision),
		h1: &http.Transport{
			Proxy:               nil, // replicas are on loopback; never an environment proxy
			DialContext:         dialer.DialContext,
			MaxIdleConns:        0,
			MaxIdleConnsPerHost: 1024,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true, // bytes pass through untouched
			ForceAttemptHTTP2:   false,
			WriteBufferSize:     32 << 10,
			ReadBufferSize:      32 << 10,
		},
		h2: &http2.Transport{
			AllowHTTP:          true,
			DisableCompression: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				return dialer.DialContext(ctx, network, addr)
			},
		},
	}
	g.routes.Store(&table{})
	if cfg.Registerer != nil {
		g.metrics = newMetrics(cfg.Registerer)
	}
	g.requestLog.Store(cfg.RequestLog)
	return g
}

// Handler returns the gateway wrapped to accept HTTP/2 cleartext (prior knowledge and
// Upgrade: h2c) next to HTTP/1.1, so gRPC clients work end to end.
func (g *Gateway) Handler() http.Handler {
	return h2c.NewHandler(g, &http2.Server{})
}

// CloseIdleConnections closes the idle connections to replicas (shutdown, tests).
func (g *Gateway) CloseIdleConnections() {
	g.h1.CloseIdleConnections()
	g.h2.CloseIdleConnections()
}

// SetRevision adds a revision or updates its serving settings (timeouts, containerConcurrency,
// port name, names). A new revision starts with the activator in the path.
func (g *Gateway) SetRevision(rev workload.Revision) {
	r := g.revisionFor(rev.ID, true)
	r.setConfig(rev)
}

// RemoveRevision forgets a revision: requests held for it get 503, requests in flight finish.
func (g *Gateway) RemoveRevision(id workload.RevisionID) {
	r := g.revisionFor(id, false)
	if r != nil && r.remove() {
		g.forget(r)
	}
}

// forget drops a removed revision once nothing of it is in flight, so that InFlight and
// WaitIdle keep answering for its replicas while they drain.
func (g *Gateway) forget(r *revision) {
	g.revMu.Lock()
	if g.revs[r.id] == r {
		delete(g.revs, r.id)
	}
	g.revMu.Unlock()
}

// SetEndpoints replaces the set of ready replicas of a revision. Replicas left out stop
// receiving new requests; those in flight on them finish (see InFlight and WaitIdle).
func (g *Gateway) SetEndpoints(id workload.RevisionID, eps []workload.Endpoint) {
	r := g.revisionFor(id, true)
	if r.setEndpoints(eps) {
		g.demand(id)
	}
}

// SetActivatorInPath says whether the activator is in the revision's path (Knative: excess
// burst capacity is negative). In the path, requests wait in the revision's queue and go only
// to a replica with a free slot; out of it, each goes to the least loaded replica and waits in
// that replica's breaker queue (containerConcurrency x 10), 503 when that is full.
func (g *Gateway) SetActivatorInPath(id workload.RevisionID, inPath bool) {
	g.revisionFor(id, true).setInPath(inPath)
}

// InFlight is the number of requests being served by a replica of a revision now.
func (g *Gateway) InFlight(id workload.RevisionID, replica string) int {
	r := g.revisionFor(id, false)
	if r == nil {
		return 0
	}
	return r.inFlight(replica)
}

// SetRequestLog replaces the request log (nil: none), for config-observability applied while
// up runs; requests that end from now on use it.
func (g *Gateway) SetRequestLog(l *RequestLogger) { g.requestLog.Store(l) }

// LastActive is when a replica's last request ended: zero while none has, or for an unknown
// replica. The supervisor's GPU hand-off stops the least recently used idle replica first.
func (g *Gateway) LastActive(id workload.RevisionID, replica string) time.Time {
	r := g.revisionFor(id, false)
	if r == nil {
		return time.Time{}
	}
	return r.lastActive(replica)
}

// Queued is the number of requests of a revision waiting for a slot (activator queue and
// breaker queues together).
func (g *Gateway) Queued(id workload.RevisionID) int {
	r := g.revisionFor(id, false)
	if r == nil {
		return 0
	}
	return r.queued()
}

// WaitIdle returns when no request is in flight on the replica, or ctx's error.
func (g *Gateway) WaitIdle(ctx context.Context, id workload.RevisionID, replica string) error {
	r := g.revisionFor(id, false)
	if r == nil {
		return nil
	}
	ch := r.idleChan(replica)
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Collect returns, per revision, the 1 s buckets completed up to now since the last call.
func (g *Gateway) Collect(now time.Time) []workload.Stat {
	g.revMu.RLock()
	revs := make([]*revision, 0, len(g.revs))
	for _, r := range g.revs {
		revs = append(revs, r)
	}
	g.revMu.RUnlock()
	var out []workload.Stat
	for _, r := range revs {
		out = r.collect(now, out)
	}
	return out
}

// Drain waits until no request is inside the gateway (ServeHTTP): none in flight to a replica,
// none held in an activator or breaker queue, no upgraded (websocket) connection open, and each
// finished one's metrics and request-log line written. It returns nil at the first moment that
// holds, or ctx's error if ctx ends first; the requests still inside then carry on untouched:
// Drain cancels nothing, each ends by its response, its client or its revision's timeouts (a
// held request waits up to Timeout unless RemoveRevision answers it 503 at once).
//
// Drain does not stop admitting requests (Knative keeps serving while routes converge): one
// that arrives while it waits is waited for too, one that arrives after it returned is not.
// At shutdown, call it once the listeners have stopped accepting, within the shutdown budget:
// http.Server.Shutdown does not wait for hijacked connections, and both h2c connections (see
// Handler) and websockets are hijacked, so Drain is what waits for their requests.
func (g *Gateway) Drain(ctx context.Context) error {
	ch := make(chan struct{})
	g.drainMu.Lock()
	g.drains = append(g.drains, ch)
	g.drainMu.Unlock()
	if g.active.Load() == 0 {
		g.dropDrain(ch)
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		g.dropDrain(ch)
		return ctx.Err()
	}
}

func (g *Gateway) dropDrain(ch chan struct{}) {
	g.drainMu.Lock()
	defer g.drainMu.Unlock()
	for i, c := range g.drains {
		if c == ch {
			g.drains = append(g.drains[:i], g.drains[i+1:]...)
			return
		}
	}
}

func (g *Gateway) enter() { g.active.Add(1) }

func (g *Gateway) leave() {
	if g.active.Add(-1) != 0 {
		return
	}
	g.drainMu.Lock()
	for _, ch := range g.drains {
		close(ch)
	}
	g.drains = nil
	g.drainMu.Unlock()
}

func (g *Gateway) demand(id workload.RevisionID) {
	if g.cfg.OnDemand != nil {
		g.cfg.OnDemand(id)
	}
}

// revisionFor finds a revision's state; with create, a revision not seen yet gets one with
// Knative's defaults until SetRevision says more.
func (g *Gateway) revisionFor(id workload.RevisionID, create bool) *revision {
	g.revMu.RLock()
	r := g.revs[id]
	g.revMu.RUnlock()
	if !create || (r != nil && !r.isRemoved()) {
		return r
	}
	g.revMu.Lock()
	defer g.revMu.Unlock()
	if r = g.revs[id]; r == nil || r.isRemoved() {
		r = newRevision(g, id)
		g.revs[id] = r
	}
	return r
}
