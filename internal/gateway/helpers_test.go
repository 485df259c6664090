package gateway

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/clock"
	"github.com/infera-dev/infera/internal/testutil"
	"github.com/infera-dev/infera/internal/workload"
)

// checkLeaks fails the test when goroutines started during it are still running after every
// other cleanup. Register it first: cleanups run last-in first-out.
func checkLeaks(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		if stacks, ok := testutil.GoroutinesSettle(10*time.Second, before); !ok {
			t.Errorf("goroutines: %d before, more after\n%s", before, stacks)
		}
	})
}

// rig is a gateway behind a real loopback listener, with a client of its own.
type rig struct {
	t      *testing.T
	g      *Gateway
	srv    *httptest.Server
	client *http.Client
	rts    []workload.Route
}

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	checkLeaks(t)
	g := New(cfg)
	srv := httptest.NewServer(g.Handler())
	tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	rg := &rig{t: t, g: g, srv: srv, client: &http.Client{Transport: tr}}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		srv.Close()
		g.CloseIdleConnections()
	})
	return rg
}

// backend starts a replica on a real loopback socket.
func backend(t *testing.T, name string, h http.HandlerFunc) workload.Endpoint {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return workload.Endpoint{Replica: name, Addr: srv.Listener.Addr().String()}
}

// named answers with its replica name and echoes the request body.
func named(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Replica", name)
		io.WriteString(w, name+":"+string(body))
	}
}

// service sets up one service with one revision and its route.
func (rg *rig) service(name string, rev workload.Revision, eps ...workload.Endpoint) workload.RevisionID {
	id := workload.NewRevisionID("default", name+"-00001")
	rev.ID, rev.Namespace, rev.Service, rev.Configuration, rev.Name = id, "default", name, name, name+"-00001"
	rg.g.SetRevision(rev)
	if eps != nil {
		rg.g.SetEndpoints(id, eps)
	}
	rg.rts = append(rg.rts, workload.Route{
		Namespace: "default", Service: name, Host: workload.ServiceHost(name, "default", "localhost"),
		Targets: []workload.Target{{Revision: id, Percent: 100}}, Models: []string{name},
	})
	rg.g.SetRoutes(rg.rts)
	return id
}

func (rg *rig) newRequest(ctx context.Context, method, host, path, body string) *http.Request {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, rg.srv.URL+path, rd)
	if err != nil {
		rg.t.Fatal(err)
	}
	req.Host = host
	return req
}

type result struct {
	code   int
	body   string
	header http.Header
	err    error
}

func (rg *rig) do(req *http.Request) result {
	res, err := rg.client.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return result{code: res.StatusCode, body: string(b), header: res.Header, err: err}
}

func (rg *rig) get(host, path string) result {
	return rg.do(rg.newRequest(context.Background(), http.MethodGet, host, path, ""))
}

// goDo sends a request in the background; the result arrives on the channel.
func (rg *rig) goDo(req *http.Request) <-chan result {
	ch := make(chan result, 1)
	go func() { ch <- rg.do(req) }()
	return ch
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, what, func() (bool, string) { return cond(), "" })
}

// gate is a replica handler that blocks each request until released or the request ends.
type gate struct {
	release chan struct{}
	once    sync.Once
}

// newGate's gate opens by itself when the test ends, so that a failing test does not hang.
func newGate(t *testing.T) *gate {
	g := &gate{release: make(chan struct{})}
	t.Cleanup(g.open)
	return g
}

func (g *gate) handler(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-g.release:
		case <-r.Context().Done():
			return
		}
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, name)
	}
}

func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func mustContain(t *testing.T, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Fatalf("%q does not contain %q", got, want)
	}
}

// active is the number of requests of a revision inside the gateway (held ones included).
func (rg *rig) active(id workload.RevisionID) int {
	r := rg.g.revisionFor(id, false)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.active
}

// testCtx bounds a blocking call of a test, so that a failure does not hang the run.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// firingClock is testutil.FakeClock counting, by the duration each timer was armed with, the
// AfterFunc callbacks that have returned. FakeClock runs each callback in its own goroutine, so
// a test waits on this count to know that a fired timer has done its work (cancelled the
// request, or re-armed the idle timeout) before it moves the clock again.
type firingClock struct {
	*testutil.FakeClock
	mu    sync.Mutex
	fired map[time.Duration]int
}

func newFiringClock(start time.Time) *firingClock {
	return &firingClock{FakeClock: testutil.NewFakeClock(start), fired: map[time.Duration]int{}}
}

func (c *firingClock) AfterFunc(d time.Duration, f func()) clock.Timer {
	return c.FakeClock.AfterFunc(d, func() {
		f()
		c.mu.Lock()
		defer c.mu.Unlock()
		c.fired[d]++
	})
}

// firedCount is how many callbacks of timers armed with d have returned.
func (c *firingClock) firedCount(d time.Duration) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fired[d]
}
