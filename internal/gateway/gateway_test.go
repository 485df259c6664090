package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"

	"github.com/infera-dev/infera/internal/testutil"
	"github.com/infera-dev/infera/internal/workload"
)

func TestRouting(t *testing.T) {
	rg := newRig(t, Config{})
	a := rg.service("alpha", workload.Revision{}, backend(t, "a1", named("alpha")))
	b1 := workload.NewRevisionID("default", "beta-00001")
	b2 := workload.NewRevisionID("default", "beta-00002")
	for _, id := range []workload.RevisionID{b1, b2} {
		_, name, _ := strings.Cut(string(id), "/")
		rg.g.SetRevision(workload.Revision{ID: id, Namespace: "default", Service: "beta", Name: name})
		rg.g.SetEndpoints(id, []workload.Endpoint{backend(t, name, named(name))})
	}
	rg.g.SetRoutes([]workload.Route{
		{Namespace: "default", Service: "alpha", Host: "alpha.default.localhost",
			Targets: []workload.Target{{Revision: a, Percent: 100}}, Models: []string{"alpha", "llama-3"}},
		{Namespace: "default", Service: "beta", Host: "beta.default.localhost",
			Targets: []workload.Target{{Revision: b1, Percent: 100, Tag: "current"}, {Revision: b2, Percent: 0, Tag: "next"}},
			Models:  []string{"beta"}},
	})
	tests := []struct {
		name, method, host, path, body string
		code                           int
		want                           string
	}{
		{"host", "GET", "alpha.default.localhost", "/", "", 200, "alpha:"},
		{"host with port, any case", "GET", "Alpha.Default.Localhost:8080", "/x", "", 200, "alpha:"},
		{"tag host, 0 percent revision", "GET", "next-beta.default.localhost", "/", "", 200, "beta-00002:"},
		{"tag host", "GET", "current-beta.default.localhost", "/", "", 200, "beta-00001:"},
		{"service host takes the split", "GET", "beta.default.localhost", "/", "", 200, "beta-00001:"},
		{"model, body replayed", "POST", "127.0.0.1", "/v1/chat/completions", `{"messages":[{"role":"user"}],"model":"llama-3","stream":true}`,
			200, `alpha:{"messages":[{"role":"user"}],"model":"llama-3","stream":true}`},
		{"model by service name", "POST", "127.0.0.1", "/v1/completions", `{"model":"beta"}`, 200, `beta-00001:{"model":"beta"}`},
		{"host wins over model", "POST", "beta.default.localhost", "/v1/completions", `{"model":"alpha"}`, 200, "beta-00001:"},
		{"unknown model", "POST", "127.0.0.1", "/v1/completions", `{"model":"nope"}`, 404, `"type":"not_found"`},
		{"model outside /v1", "POST", "127.0.0.1", "/chat", `{"model":"alpha"}`, 404, `"type":"not_found"`},
		{"unknown host", "GET", "nope.default.localhost", "/", "", 404, `{"error":{"message":`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := rg.do(rg.newRequest(context.Background(), tc.method, tc.host, tc.path, tc.body))
			if res.err != nil || res.code != tc.code {
				t.Fatalf("got %d %v %q, want %d", res.code, res.err, res.body, tc.code)
			}
			mustContain(t, res.body, tc.want)
			if tc.code == 404 {
				var v struct {
					Error struct{ Message, Type string }
				}
				if err := json.Unmarshal([]byte(res.body), &v); err != nil || v.Error.Type != "not_found" {
					t.Fatalf("404 body %q is not the JSON error: %v", res.body, err)
				}
			}
		})
	}
}

func TestModelField(t *testing.T) {
	big := `{"prompt":"` + strings.Repeat("x", 100) + `","model":"m"}`
	tests := []struct{ in, want string }{
		{`{"model":"m1"}`, "m1"},
		{`{"a":{"model":"inner"},"model":"outer"}`, "outer"},
		{`{"model":"m2","messages":[1,2,` /* truncated */, "m2"},
		{`{"messages":[1,2,`, ""},
		{`{"model":3}`, ""},
		{`[{"model":"m"}]`, ""},
		{`not json`, ""},
		{big, "m"},
	}
	for _, tc := range tests {
		if got := modelField([]byte(tc.in)); got != tc.want {
			t.Errorf("modelField(%.40q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestTrafficSplit(t *testing.T) {
	tests := []struct {
		name    string
		percent []int
		n       int
	}{
		{"70/30", []int{70, 30}, 1000},
		{"50/50", []int{50, 50}, 1000},
		{"1/99", []int{1, 99}, 1000},
		{"33/33/34", []int{33, 33, 34}, 1000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var targets []workload.Target
			for i, p := range tc.percent {
				targets = append(targets, workload.Target{Revision: workload.RevisionID(fmt.Sprint(i)), Percent: p})
			}
			s := newSplit(targets)
			counts := map[workload.RevisionID]int{}
			for range tc.n {
				id, _ := s.pick()
				counts[id]++
			}
			for i, p := range tc.percent {
				got := float64(counts[workload.RevisionID(fmt.Sprint(i))]) / float64(tc.n) * 100
				if got < float64(p)-1 || got > float64(p)+1 {
					t.Errorf("target %d: %.1f%%, want %d%%", i, got, p)
				}
			}
		})
	}
}

// TestTrafficSplitEndToEnd sends 1,000 requests through a 70/30 route to two real replicas.
func TestTrafficSplitEndToEnd(t *testing.T) {
	rg := newRig(t, Config{})
	ids := []workload.RevisionID{workload.NewRevisionID("default", "s-00001"), workload.NewRevisionID("default", "s-00002")}
	for _, id := range ids {
		_, name, _ := strings.Cut(string(id), "/")
		rg.g.SetRevision(workload.Revision{ID: id, Namespace: "default", Service: "s", Name: name})
		rg.g.SetEndpoints(id, []workload.Endpoint{backend(t, name, named(name))})
	}
	rg.g.SetRoutes([]workload.Route{{Namespace: "default", Service: "s", Host: "s.default.localhost",
		Targets: []workload.Target{{Revision: ids[0], Percent: 70}, {Revision: ids[1], Percent: 30}}}})
	counts := map[string]int{}
	for range 1000 {
		res := rg.get("s.default.localhost", "/")
		if res.code != 200 {
			t.Fatalf("%d %v %s", res.code, res.err, res.body)
		}
		counts[res.header.Get("X-Replica")]++
	}
	if c := counts["s-00001"]; c < 650 || c > 750 {
		t.Fatalf("70%% target got %d of 1000 (%v)", c, counts)
	}
}

func TestHeldRequestServedWhenEndpointAppears(t *testing.T) {
	var demands atomic.Int32
	rg := newRig(t, Config{OnDemand: func(workload.RevisionID) { demands.Add(1) }})
	id := rg.service("cold", workload.Revision{})
	first := rg.goDo(rg.newRequest(context.Background(), "POST", "cold.default.localhost", "/", "one"))
	second := rg.goDo(rg.newRequest(context.Background(), "POST", "cold.default.localhost", "/", "two"))
	eventually(t, "two held requests", func() bool { return rg.g.Queued(id) == 2 })
	if n := demands.Load(); n != 1 {
		t.Fatalf("OnDemand called %d times in one cold episode, want 1", n)
	}
	rg.g.SetEndpoints(id, []workload.Endpoint{backend(t, "r1", named("r1"))})
	for _, ch := range []<-chan result{first, second} {
		if res := <-ch; res.code != 200 || !strings.HasPrefix(res.body, "r1:") {
			t.Fatalf("held request: %d %v %q", res.code, res.err, res.body)
		}
	}
	// Scale to zero and back: a new cold episode calls OnDemand again.
	rg.g.SetEndpoints(id, nil)
	third := rg.goDo(rg.newRequest(context.Background(), "GET", "cold.default.localhost", "/", ""))
	eventually(t, "held again", func() bool { return rg.g.Queued(id) == 1 })
	if n := demands.Load(); n != 2 {
		t.Fatalf("OnDemand called %d times over two cold episodes, want 2", n)
	}
	rg.g.SetEndpoints(id, []workload.Endpoint{backend(t, "r2", named("r2"))})
	if res := <-third; res.code != 200 || !strings.HasPrefix(res.body, "r2:") {
		t.Fatalf("held request: %d %v %q", res.code, res.err, res.body)
	}
}

func TestActivatorQueueOverflowAndRemoval(t *testing.T) {
	rg := newRig(t, Config{QueueDepth: 1})
	id := rg.service("cold", workload.Revision{})
	held := rg.goDo(rg.newRequest(context.Background(), "GET", "cold.default.localhost", "/", ""))
	eventually(t, "a held request", func() bool { return rg.g.Queued(id) == 1 })
	res := rg.get("cold.default.localhost", "/")
	if res.code != 503 || res.header.Get("Retry-After") == "" {
		t.Fatalf("overflow: %d Retry-After=%q %q", res.code, res.header.Get("Retry-After"), res.body)
	}
	mustContain(t, res.body, "activator queue full")
	rg.g.RemoveRevision(id)
	if res := <-held; res.code != 503 {
		t.Fatalf("held request of a removed revision: %d %q", res.code, res.body)
	}
	if res := rg.get("cold.default.localhost", "/"); res.code != 503 {
		t.Fatalf("request for a removed revision: %d %q", res.code, res.body)
	}
}

func TestClientGoneWhileHeld(t *testing.T) {
	rg := newRig(t, Config{})
	id := rg.service("cold", workload.Revision{})
	ctx, cancel := context.WithCancel(context.Background())
	ch := rg.goDo(rg.newRequest(ctx, "GET", "cold.default.localhost", "/", ""))
	eventually(t, "held", func() bool { return rg.g.Queued(id) == 1 })
	cancel()
	if res := <-ch; res.err == nil {
		t.Fatalf("canceled request got %d", res.code)
	}
	eventually(t, "queue empty", func() bool { return rg.g.Queued(id) == 0 })
	if err := rg.g.Drain(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}

func TestBreaker(t *testing.T) {
	tests := []struct {
		name   string
		inPath bool
	}{
		{"out of path: replica queue of 10 x CC, then 503", false},
		{"in path: held by the activator, no 503", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rg := newRig(t, Config{})
			gt := newGate(t)
			id := rg.service("cc", workload.Revision{ContainerConcurrency: 1}, backend(t, "r1", gt.handler("r1")))
			rg.g.SetActivatorInPath(id, tc.inPath)
			var chans []<-chan result
			for range 11 {
				chans = append(chans, rg.goDo(rg.newRequest(context.Background(), "GET", "cc.default.localhost", "/", "")))
			}
			eventually(t, "1 in flight, 10 queued", func() bool {
				return rg.g.InFlight(id, "r1") == 1 && rg.g.Queued(id) == 10
			})
			if tc.inPath {
				chans = append(chans, rg.goDo(rg.newRequest(context.Background(), "GET", "cc.default.localhost", "/", "")))
				eventually(t, "11 queued", func() bool { return rg.g.Queued(id) == 11 })
			} else {
				res := rg.get("cc.default.localhost", "/")
				if res.code != 503 || res.body != "pending request queue full\n" {
					t.Fatalf("breaker overflow: %d %q", res.code, res.body)
				}
			}
			gt.open()
			for _, ch := range chans {
				if res := <-ch; res.code != 200 {
					t.Fatalf("queued request: %d %q", res.code, res.body)
				}
			}
		})
	}
}

// TestLeastInFlight checks that a new request goes to the replica with fewer in flight.
func TestLeastInFlight(t *testing.T) {
	rg := newRig(t, Config{})
	busy, free := newGate(t), newGate(t)
	id := rg.service("lb", workload.Revision{},
		backend(t, "busy", busy.handler("busy")), backend(t, "free", free.handler("free")))
	first := rg.goDo(rg.newRequest(context.Background(), "GET", "lb.default.localhost", "/", ""))
	eventually(t, "one in flight", func() bool { return rg.g.InFlight(id, "busy")+rg.g.InFlight(id, "free") == 1 })
	loaded, other := "busy", "free"
	if rg.g.InFlight(id, "free") == 1 {
		loaded, other = "free", "busy"
	}
	second := rg.goDo(rg.newRequest(context.Background(), "GET", "lb.default.localhost", "/", ""))
	eventually(t, "second on the other replica", func() bool { return rg.g.InFlight(id, other) == 1 })
	if n := rg.g.InFlight(id, loaded); n != 1 {
		t.Fatalf("loaded replica has %d in flight", n)
	}
	busy.open()
	free.open()
	<-first
	<-second
}

// TestTimeouts moves the injected clock so that Knative's three timeouts fall due at chosen
// points of a request's life; the idle timeout reads the same clock.
func TestTimeouts(t *testing.T) {
	const (
		timeout = time.Hour
		start   = 2 * time.Minute
		idle    = 3 * time.Minute
	)
	type step struct {
		more    bool          // first let the replica write its next event
		wait    string        // "inflight", "queued", "event": a replica's event reached the client
		advance time.Duration // the clock, firing the timers that fall due
		fire    time.Duration // a timer armed with this duration must be armed, fire and finish
	}
	tests := []struct {
		name    string
		rev     workload.Revision
		replica bool
		steps   []step
		code    int
		body    string
	}{
		{"timeout before the first byte", workload.Revision{Timeout: timeout}, true,
			[]step{{wait: "inflight", advance: timeout, fire: timeout}}, 504, "request timeout"},
		{"timeout while held", workload.Revision{Timeout: timeout}, false,
			[]step{{wait: "queued", advance: timeout, fire: timeout}}, 504, "request timeout"},
		{"started stream cut at the deadline", workload.Revision{Timeout: timeout}, true,
			[]step{{wait: "event", advance: timeout, fire: timeout}}, 200, "data: 1\n\nrequest timeout"},
		{"response start timeout", workload.Revision{Timeout: timeout, ResponseStartTimeout: start}, true,
			[]step{{wait: "inflight", advance: start, fire: start}}, 504, "request timeout"},
		{"response start timeout spares a started stream", workload.Revision{Timeout: timeout, ResponseStartTimeout: start}, true,
			[]step{{wait: "event", advance: start, fire: start}, {more: true, wait: "event", advance: timeout - start, fire: timeout}},
			200, "data: 1\n\ndata: 2\n\nrequest timeout"},
		{"idle timeout before any byte", workload.Revision{Timeout: timeout, IdleTimeout: idle}, true,
			[]step{{wait: "inflight", advance: idle, fire: idle}}, 504, "request timeout"},
		{"idle timeout cuts a stream", workload.Revision{Timeout: timeout, IdleTimeout: idle}, true,
			[]step{{wait: "event", advance: idle, fire: idle}}, 200, "data: 1\n\nrequest timeout"},
		// The write at idle/2 makes the timer falling due at idle re-arm itself for idle/2.
		{"writes keep a stream from the idle timeout", workload.Revision{Timeout: timeout, IdleTimeout: idle}, true,
			[]step{{wait: "event", advance: idle / 2}, {more: true, wait: "event", advance: idle / 2, fire: idle},
				{advance: idle / 2, fire: idle / 2}}, 200, "data: 1\n\ndata: 2\n\nrequest timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFiringClock(time.Unix(1000, 0))
			rg := newRig(t, Config{Clock: clk})
			more := make(chan struct{})
			var eps []workload.Endpoint
			if tc.replica {
				eps = append(eps, backend(t, "r1", func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/stall" {
						<-r.Context().Done()
						return
					}
					for i := 1; ; i++ {
						fmt.Fprintf(w, "data: %d\n\n", i)
						w.(http.Flusher).Flush()
						select {
						case <-more:
						case <-r.Context().Done():
							return
						}
					}
				}))
			}
			id := rg.service("slow", tc.rev, eps...)
			path := "/stall"
			if tc.steps[0].wait == "event" {
				path = "/stream"
			}
			events := make(chan string, 10)
			done := make(chan result, 1)
			go func() {
				res, err := rg.client.Do(rg.newRequest(context.Background(), "GET", "slow.default.localhost", path, ""))
				if err != nil {
					done <- result{err: err}
					return
				}
				defer res.Body.Close()
				br := bufio.NewReader(res.Body)
				var body strings.Builder
				for {
					line, err := br.ReadString('\n')
					body.WriteString(line)
					if strings.HasPrefix(line, "data: ") {
						events <- line
					}
					if err != nil {
						done <- result{code: res.StatusCode, body: body.String()}
						return
					}
				}
			}()
			for _, st := range tc.steps {
				if st.more {
					more <- struct{}{}
				}
				switch st.wait {
				case "inflight":
					eventually(t, "in flight", func() bool { return rg.g.InFlight(id, "r1") == 1 })
				case "queued":
					eventually(t, "queued", func() bool { return rg.g.Queued(id) == 1 })
				case "event":
					select {
					case <-events:
					case <-time.After(10 * time.Second):
						t.Fatal("no event reached the client")
					}
				}
				fired := clk.firedCount(st.fire)
				if st.fire != 0 && !slices.Contains(clk.Pending(), st.fire) {
					t.Fatalf("no timer of %v armed (armed: %v)", st.fire, clk.Pending())
				}
				clk.Advance(st.advance)
				if st.fire != 0 {
					eventually(t, fmt.Sprintf("the timer of %v fired", st.fire), func() bool { return clk.firedCount(st.fire) > fired })
				}
			}
			res := <-done
			if res.code != tc.code || res.body != tc.body {
				t.Fatalf("got %d %q (%v), want %d %q", res.code, res.body, res.err, tc.code, tc.body)
			}
			eventually(t, "request done", func() bool { return rg.active(id) == 0 })
			if p := clk.Pending(); len(p) != 0 {
				t.Fatalf("%d timers still armed after the request: %v", len(p), p)
			}
		})
	}
}

func TestSSEFlushedPerEvent(t *testing.T) {
	rg := newRig(t, Config{})
	next := make(chan struct{})
	rg.service("sse", workload.Revision{}, backend(t, "r1", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-next: // the client has read this event: the gateway did not buffer it
			case <-r.Context().Done():
				return
			}
		}
	}))
	res, err := rg.client.Do(rg.newRequest(context.Background(), "GET", "sse.default.localhost", "/", ""))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	for i := range 3 {
		line, err := br.ReadString('\n')
		if err != nil || line != fmt.Sprintf("data: %d\n", i) {
			t.Fatalf("event %d: %q %v", i, line, err)
		}
		if blank, _ := br.ReadString('\n'); blank != "\n" {
			t.Fatalf("event %d: no blank line: %q", i, blank)
		}
		next <- struct{}{}
	}
}

func TestWebsocketUpgrade(t *testing.T) {
	rg := newRig(t, Config{})
	rg.service("ws", workload.Revision{}, backend(t, "r1", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" || !strings.EqualFold(r.Header.Get("Connection"), "upgrade") {
			http.Error(w, "not an upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		io.Copy(conn, brw) // echo until the client closes
	}))
	conn, err := net.Dial("tcp", rg.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /chat HTTP/1.1\r\nHost: ws.default.localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 101 || res.Header.Get("Upgrade") != "websocket" {
		t.Fatalf("upgrade response: %v %v", res, err)
	}
	for _, msg := range []string{"ping", "pong"} {
		io.WriteString(conn, msg)
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo: %q %v", buf, err)
		}
	}
	conn.Close()
	if err := rg.g.Drain(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}

func TestRetryOnConnectionRefused(t *testing.T) {
	rg := newRig(t, Config{})
	dead := workload.Endpoint{Replica: "dead", Addr: deadAddr(t)}
	id := rg.service("retry", workload.Revision{ContainerConcurrency: 1}, dead, backend(t, "live", named("live")))
	rg.g.SetActivatorInPath(id, false)
	for i := range 6 { // round robin over ties puts some first tries on the dead replica
		res := rg.do(rg.newRequest(context.Background(), "POST", "retry.default.localhost", "/", fmt.Sprint("body", i)))
		if res.code != 200 || res.body != fmt.Sprint("live:body", i) {
			t.Fatalf("request %d: %d %q %v", i, res.code, res.body, res.err)
		}
	}
	// Every ready replica refusing: the request waits for one that answers.
	rg.g.SetEndpoints(id, []workload.Endpoint{dead})
	ch := rg.goDo(rg.newRequest(context.Background(), "GET", "retry.default.localhost", "/", ""))
	eventually(t, "re-queued", func() bool { return rg.g.Queued(id) == 1 })
	rg.g.SetEndpoints(id, []workload.Endpoint{dead, backend(t, "new", named("new"))})
	if res := <-ch; res.code != 200 || res.body != "new:" {
		t.Fatalf("re-queued request: %d %q", res.code, res.body)
	}
}

func TestHeaders(t *testing.T) {
	rg := newRig(t, Config{})
	got := make(chan http.Header, 1)
	rg.service("h", workload.Revision{}, backend(t, "r1", func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Clone()
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Reply", "yes")
	}))
	req := rg.newRequest(context.Background(), "GET", "h.default.localhost", "/", "")
	req.Header.Set("Connection", "X-Drop-Me")
	req.Header.Set("X-Drop-Me", "1")
	req.Header.Set("Proxy-Authorization", "secret")
	req.Header.Set("X-Forwarded-For", "10.0.0.1")
	req.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	req.Header.Set("X-B3-Traceid", "80f198ee56343ba864fe8b2a57d3eff7")
	req.Header.Set("B3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")
	res := rg.do(req)
	if res.code != 200 || res.header.Get("X-Reply") != "yes" || res.header.Get("Keep-Alive") != "" {
		t.Fatalf("response: %d %v", res.code, res.header)
	}
	h := <-got
	for _, k := range []string{"X-Drop-Me", "Proxy-Authorization"} {
		if v := h.Get(k); v != "" {
			t.Errorf("hop-by-hop %s reached the replica: %q", k, v)
		}
	}
	want := map[string]string{
		"X-Forwarded-For":   "10.0.0.1, 127.0.0.1",
		"X-Forwarded-Proto": "http",
		"Traceparent":       "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		"X-B3-Traceid":      "80f198ee56343ba864fe8b2a57d3eff7",
		"B3":                "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1",
	}
	for k, v := range want {
		if h.Get(k) != v {
			t.Errorf("%s = %q, want %q", k, h.Get(k), v)
		}
	}
}

func TestMaxBodyBytes(t *testing.T) {
	rg := newRig(t, Config{MaxBodyBytes: 8})
	rg.service("m", workload.Revision{}, backend(t, "r1", named("r1")))
	tests := []struct {
		name, host, path, body string
		chunked                bool // no Content-Length: the limit is found while streaming
		code                   int
	}{
		{"within", "m.default.localhost", "/", "12345678", false, 200},
		{"within, chunked", "m.default.localhost", "/", "12345678", true, 200},
		{"over, by host", "m.default.localhost", "/", "123456789", false, 413},
		{"over, chunked", "m.default.localhost", "/", "123456789", true, 413},
		{"over, by model", "127.0.0.1", "/v1/completions", `{"model":"m"}`, false, 413},
		{"over, by model, chunked", "127.0.0.1", "/v1/completions", `{"model":"m"}`, true, 413},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := rg.newRequest(context.Background(), "POST", tc.host, tc.path, tc.body)
			if tc.chunked {
				req.Body = io.NopCloser(strings.NewReader(tc.body))
				req.ContentLength = -1
			}
			res := rg.do(req)
			if res.code != tc.code {
				t.Fatalf("%d %q %v", res.code, res.body, res.err)
			}
		})
	}
}

// TestStats drives the injected clock: concurrency is the time-weighted average of requests
// in flight per second, probes are left out.
func TestStats(t *testing.T) {
	clk := testutil.NewFakeClock(time.Unix(1000, 0))
	rg := newRig(t, Config{Clock: clk})
	ga, gb := newGate(t), newGate(t)
	id := rg.service("st", workload.Revision{}, backend(t, "r1", func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("X-Gate") {
		case "a":
			ga.handler("a")(w, r)
		case "b":
			gb.handler("b")(w, r)
		}
	}))
	gated := func(name string) *http.Request {
		req := rg.newRequest(context.Background(), "GET", "st.default.localhost", "/", "")
		req.Header.Set("X-Gate", name)
		return req
	}
	at := func(sec float64) time.Time { return time.Unix(1000, 0).Add(time.Duration(sec * float64(time.Second))) }

	a := rg.goDo(gated("a")) // in at 1000.0
	eventually(t, "a in flight", func() bool { return rg.g.InFlight(id, "r1") == 1 })
	clk.Set(at(0.5))
	b := rg.goDo(gated("b")) // in at 1000.5
	eventually(t, "b in flight", func() bool { return rg.g.InFlight(id, "r1") == 2 })
	probe := rg.newRequest(context.Background(), "GET", "st.default.localhost", "/", "")
	probe.Header.Set("K-Kubelet-Probe", "queue")
	if res := rg.do(probe); res.code != 200 {
		t.Fatalf("probe: %d", res.code)
	}
	clk.Set(at(1.25))
	ga.open()
	<-a // out at 1001.25
	eventually(t, "a counted out", func() bool { return rg.active(id) == 1 })
	clk.Set(at(2.5))
	gb.open()
	<-b // out at 1002.5
	eventually(t, "b counted out", func() bool { return rg.active(id) == 0 })

	got := rg.g.Collect(at(4))
	want := []workload.Stat{
		{Revision: id, Time: at(1), Concurrency: 0.5*1 + 0.5*2, Requests: 2},
		{Revision: id, Time: at(2), Concurrency: 0.25*2 + 0.75*1, Requests: 0},
		{Revision: id, Time: at(3), Concurrency: 0.5, Requests: 0},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if !got[i].Time.Equal(want[i].Time) || got[i].Revision != want[i].Revision ||
			abs(got[i].Concurrency-want[i].Concurrency) > 1e-9 || got[i].Requests != want[i].Requests {
			t.Errorf("bucket %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	if again := rg.g.Collect(at(10)); len(again) != 0 {
		t.Fatalf("second Collect returned %+v", again)
	}
}

// TestOnDemandIsTheFirstRequestStat: OnDemand comes as the first cold request arrives, on the
// injected clock, and that request is counted in the revision's next Collect too (the
// autoscaler, which records both, leaves it out there).
func TestOnDemandIsTheFirstRequestStat(t *testing.T) {
	clk := testutil.NewFakeClock(time.Unix(1000, 0))
	at := func(sec float64) time.Time { return time.Unix(1000, 0).Add(time.Duration(sec * float64(time.Second))) }
	demands := make(chan time.Time, 2)
	rg := newRig(t, Config{Clock: clk, OnDemand: func(workload.RevisionID) { demands <- clk.Now() }})
	id := rg.service("cold", workload.Revision{})
	clk.Set(at(0.25))
	res := rg.goDo(rg.newRequest(context.Background(), "GET", "cold.default.localhost", "/", ""))
	if got := <-demands; !got.Equal(at(0.25)) {
		t.Fatalf("OnDemand at %v, want the arrival %v", got, at(0.25))
	}
	eventually(t, "held", func() bool { return rg.g.Queued(id) == 1 })
	clk.Set(at(0.75))
	rg.g.SetEndpoints(id, []workload.Endpoint{backend(t, "r1", named("r1"))})
	if r := <-res; r.code != 200 {
		t.Fatalf("held request: %d %v", r.code, r.err)
	}
	eventually(t, "counted out", func() bool { return rg.active(id) == 0 })
	got := rg.g.Collect(at(2))
	if len(got) != 1 || !got[0].Time.Equal(at(1)) || got[0].Requests != 1 || abs(got[0].Concurrency-0.5) > 1e-9 {
		t.Fatalf("Collect = %+v, want the held request: 1 arrival, 0.5 in flight in the second to %v", got, at(1))
	}
	if len(demands) != 0 {
		t.Fatal("OnDemand called again in the same cold episode")
	}
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

func TestStatsAccumulator(t *testing.T) {
	base := time.Unix(50, 0)
	at := func(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }
	type ev struct {
		ms    int
		delta int // +1 arrival, -1 departure
	}
	tests := []struct {
		name   string
		events []ev
		until  int
		want   []workload.Stat // Revision "r"
	}{
		{"nothing", nil, 5000, nil},
		{"one request across two seconds", []ev{{200, +1}, {1700, -1}}, 3000, []workload.Stat{
			{Time: at(1000), Concurrency: 0.8, Requests: 1}, {Time: at(2000), Concurrency: 0.7}}},
		{"long request reports every second", []ev{{0, +1}, {3000, -1}}, 3000, []workload.Stat{
			{Time: at(1000), Concurrency: 1, Requests: 1}, {Time: at(2000), Concurrency: 1}, {Time: at(3000), Concurrency: 1}}},
		{"idle seconds are skipped", []ev{{100, +1}, {200, -1}, {5500, +1}, {5600, -1}}, 7000, []workload.Stat{
			{Time: at(1000), Concurrency: 0.1, Requests: 1}, {Time: at(6000), Concurrency: 0.1, Requests: 1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s statsAcc
			s.advance("r", base)
			for _, e := range tc.events {
				s.advance("r", at(e.ms))
				s.conc += e.delta
				if e.delta > 0 {
					s.reqs++
				}
			}
			s.advance("r", at(tc.until))
			if len(s.done) != len(tc.want) {
				t.Fatalf("got %+v, want %+v", s.done, tc.want)
			}
			for i, w := range tc.want {
				g := s.done[i]
				if !g.Time.Equal(w.Time) || abs(g.Concurrency-w.Concurrency) > 1e-9 || g.Requests != w.Requests {
					t.Errorf("bucket %d: got %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

func TestWaitIdleAndDrain(t *testing.T) {
	rg := newRig(t, Config{})
	gt := newGate(t)
	id := rg.service("d", workload.Revision{}, backend(t, "r1", gt.handler("r1")))
	if err := rg.g.WaitIdle(testCtx(t), id, "r1"); err != nil {
		t.Fatalf("WaitIdle on an idle replica: %v", err)
	}
	ch := rg.goDo(rg.newRequest(context.Background(), "GET", "d.default.localhost", "/", ""))
	eventually(t, "in flight", func() bool { return rg.g.InFlight(id, "r1") == 1 })
	// The replica leaves the ready set: its request in flight still counts until done.
	rg.g.SetEndpoints(id, nil)
	if n := rg.g.InFlight(id, "r1"); n != 1 {
		t.Fatalf("InFlight after removal from the ready set = %d", n)
	}
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := rg.g.WaitIdle(short, id, "r1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitIdle while busy: %v", err)
	}
	if err := rg.g.Drain(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Drain while busy: %v", err)
	}
	errs := make(chan error, 2)
	go func() { errs <- rg.g.WaitIdle(testCtx(t), id, "r1") }()
	go func() { errs <- rg.g.Drain(testCtx(t)) }()
	gt.open()
	if res := <-ch; res.code != 200 {
		t.Fatalf("%d %q", res.code, res.body)
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := rg.g.InFlight(id, "r1"); n != 0 {
		t.Fatalf("InFlight after drain = %d", n)
	}
}

func TestMetricsAndRequestLog(t *testing.T) {
	reg := prometheus.NewRegistry()
	var mu sync.Mutex
	var logBuf strings.Builder
	rl, err := NewRequestLogger(`{{.Request.Method}} {{.Request.URL.Path}} {{.Response.Code}} {{.Response.Size}} {{.Revision.Namespace}}/{{.Revision.Service}}/{{.Revision.Configuration}}/{{.Revision.Name}} {{.Revision.PodName}} {{.Revision.PodIP}} {{.TraceID}} {{if gt .Response.Latency 0.0}}timed{{else}}zero{{end}}`,
		writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return logBuf.Write(p) }))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewRequestLogger("{{.Nope", io.Discard); err == nil {
		t.Fatal("a broken template was accepted")
	}
	rg := newRig(t, Config{Registerer: reg, RequestLog: rl})
	rg.service("obs", workload.Revision{}, backend(t, "obs-r1", named("x")))
	req := rg.newRequest(context.Background(), "GET", "obs.default.localhost", "/p", "")
	req.Header.Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	if res := rg.do(req); res.code != 200 {
		t.Fatal(res.code)
	}
	rg.get("nope.default.localhost", "/")

	labels := []string{"default", "obs", "obs", "obs-00001", "200", "2xx"}
	if v := metricValue(t, rg.g.metrics.requests.WithLabelValues(labels...)); v != 1 {
		t.Errorf("revision_request_count = %v", v)
	}
	if v := metricValue(t, rg.g.metrics.activator.WithLabelValues(labels...)); v != 1 {
		t.Errorf("activator_request_count = %v", v)
	}
	var h dto.Metric
	if err := rg.g.metrics.latencies.WithLabelValues(labels...).(prometheus.Histogram).Write(&h); err != nil || h.GetHistogram().GetSampleCount() != 1 {
		t.Errorf("revision_request_latencies: %v %v", h.GetHistogram(), err)
	}
	if v := metricValue(t, rg.g.metrics.queue.WithLabelValues("default", "obs", "obs", "obs-00001")); v != 0 {
		t.Errorf("revision_queue_depth = %v", v)
	}
	mu.Lock()
	lines := strings.Split(strings.TrimSuffix(logBuf.String(), "\n"), "\n")
	mu.Unlock()
	if len(lines) != 2 {
		t.Fatalf("log lines: %q", lines)
	}
	wantPrefix := "GET /p 200 2 default/obs/obs/obs-00001 obs-r1 127.0.0.1 0af7651916cd43dd8448eb211c80319c"
	if !strings.HasPrefix(lines[0], wantPrefix) {
		t.Errorf("log line %q, want prefix %q", lines[0], wantPrefix)
	}
	mustContain(t, lines[1], "GET / 404")
}

// TestProbeRequestLog: a probe request gets a request-log line only with LogProbeRequests(true)
// (logging.enable-probe-request-log), an ordinary one either way, and probes stay out of the
// request metrics; as Knative's RequestLogHandler and request metrics handler do.
func TestProbeRequestLog(t *testing.T) {
	tests := []struct {
		name          string
		header, value string // "": an ordinary request
		logProbes     bool
		line          bool
	}{
		{"ordinary, flag off", "", "", false, true},
		{"ordinary, flag on", "", "", true, true},
		{"kubelet probe header, flag off", "K-Kubelet-Probe", "queue", false, false},
		{"kubelet probe header, flag on", "K-Kubelet-Probe", "queue", true, true},
		{"kube-probe user agent, flag off", "User-Agent", "kube-probe/1.31", false, false},
		{"kube-probe user agent, flag on", "User-Agent", "kube-probe/1.31", true, true},
		{"network probe, flag off", "K-Network-Probe", "probe", false, false},
		{"network probe, flag on", "K-Network-Probe", "probe", true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var logBuf strings.Builder
			rl, err := NewRequestLogger(`{{.Request.Method}} {{.Request.URL.Path}} {{.Response.Code}} {{.Revision.Name}}`,
				writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return logBuf.Write(p) }),
				LogProbeRequests(tc.logProbes))
			if err != nil {
				t.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			rg := newRig(t, Config{RequestLog: rl, Registerer: reg})
			rg.service("pr", workload.Revision{}, backend(t, "r1", named("r1")))
			req := rg.newRequest(context.Background(), "GET", "pr.default.localhost", "/healthz", "")
			if tc.header != "" {
				req.Header.Set(tc.header, tc.value)
			}
			if res := rg.do(req); res.code != 200 {
				t.Fatalf("%d %v %q", res.code, res.err, res.body)
			}
			if err := rg.g.Drain(testCtx(t)); err != nil { // the line is written before the request leaves
				t.Fatal(err)
			}
			mu.Lock()
			got := logBuf.String()
			mu.Unlock()
			want := ""
			if tc.line {
				want = "GET /healthz 200 pr-00001\n"
			}
			if got != want {
				t.Errorf("request log %q, want %q", got, want)
			}
			wantCount := 1.0
			if tc.header != "" {
				wantCount = 0
			}
			labels := []string{"default", "pr", "pr", "pr-00001", "200", "2xx"}
			if v := metricValue(t, rg.g.metrics.requests.WithLabelValues(labels...)); v != wantCount {
				t.Errorf("revision_request_count = %v, want %v", v, wantCount)
			}
		})
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if c := d.GetCounter(); c != nil {
		return c.GetValue()
	}
	return d.GetGauge().GetValue()
}

// TestH2CEndToEnd: an HTTP/2 cleartext client, the gateway, and an h2c replica; the request
// body streams up, the response comes back with trailers, as gRPC needs.
func TestH2CEndToEnd(t *testing.T) {
	rg := newRig(t, Config{})
	type seen struct {
		proto int
		te    string
		body  string
	}
	got := make(chan seen, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- seen{r.ProtoMajor, r.Header.Get("Te"), string(body)}
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		w.Write([]byte("reply"))
		w.Header().Set("Grpc-Status", "0")
		w.Header().Set(http.TrailerPrefix+"Grpc-Message", "ok")
	})
	srv := httptest.NewServer(h2c.NewHandler(h, &http2.Server{}))
	t.Cleanup(srv.Close)
	rg.service("grpc", workload.Revision{Container: workload.Container{PortName: "h2c"}},
		workload.Endpoint{Replica: "r1", Addr: srv.Listener.Addr().String()})

	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	req := rg.newRequest(context.Background(), "POST", "grpc.default.localhost", "/pkg.Svc/Method", "")
	req.Body = io.NopCloser(strings.NewReader("request"))
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	res, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil || res.ProtoMajor != 2 || string(body) != "reply" {
		t.Fatalf("response: %s %d %q %v", res.Proto, res.StatusCode, body, err)
	}
	if res.Trailer.Get("Grpc-Status") != "0" || res.Trailer.Get("Grpc-Message") != "ok" {
		t.Fatalf("trailers: %v", res.Trailer)
	}
	if s := <-got; s.proto != 2 || s.te != "trailers" || s.body != "request" {
		t.Fatalf("replica saw %+v", s)
	}
}

// TestBrokenStreams: a replica that dies mid-response and a client that leaves mid-stream end
// the request without a panic escaping and without leaking.
func TestBrokenStreams(t *testing.T) {
	rg := newRig(t, Config{})
	id := rg.service("b", workload.Revision{}, backend(t, "r1", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		if r.URL.Path == "/die" {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		<-r.Context().Done()
	}))
	t.Run("replica dies", func(t *testing.T) {
		res := rg.get("b.default.localhost", "/die")
		if res.err == nil {
			t.Fatalf("a broken stream looked complete: %d %q", res.code, res.body)
		}
	})
	t.Run("client leaves", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		res, err := rg.client.Do(rg.newRequest(ctx, "GET", "b.default.localhost", "/stay", ""))
		if err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(res.Body).ReadString('\n')
		if line != "data: 1\n" {
			t.Fatalf("first event %q", line)
		}
		cancel()
		res.Body.Close()
		if err := rg.g.WaitIdle(testCtx(t), id, "r1"); err != nil {
			t.Fatal(err)
		}
		if err := rg.g.Drain(testCtx(t)); err != nil {
			t.Fatal(err)
		}
	})
}

// TestRemoveRevisionWhileInFlight: requests in flight finish and stay visible to InFlight and
// WaitIdle; then the revision is forgotten.
func TestRemoveRevisionWhileInFlight(t *testing.T) {
	rg := newRig(t, Config{})
	gt := newGate(t)
	id := rg.service("rm", workload.Revision{}, backend(t, "r1", gt.handler("r1")))
	ch := rg.goDo(rg.newRequest(context.Background(), "GET", "rm.default.localhost", "/", ""))
	eventually(t, "in flight", func() bool { return rg.g.InFlight(id, "r1") == 1 })
	rg.g.RemoveRevision(id)
	if n := rg.g.InFlight(id, "r1"); n != 1 {
		t.Fatalf("InFlight of a removed revision's replica = %d", n)
	}
	if res := rg.get("rm.default.localhost", "/"); res.code != 503 {
		t.Fatalf("new request for a removed revision: %d", res.code)
	}
	gt.open()
	if res := <-ch; res.code != 200 {
		t.Fatalf("in-flight request: %d %q", res.code, res.body)
	}
	if err := rg.g.WaitIdle(testCtx(t), id, "r1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "forgotten", func() bool { return rg.g.revisionFor(id, false) == nil })
}

// TestBreakerQueueMovesWhenReplicaLeaves: requests queued on a replica that leaves the ready
// set go back to the activator and on to another replica.
func TestBreakerQueueMovesWhenReplicaLeaves(t *testing.T) {
	rg := newRig(t, Config{})
	gt := newGate(t)
	id := rg.service("mv", workload.Revision{ContainerConcurrency: 1}, backend(t, "old", gt.handler("old")))
	rg.g.SetActivatorInPath(id, false)
	first := rg.goDo(rg.newRequest(context.Background(), "GET", "mv.default.localhost", "/", ""))
	eventually(t, "in flight", func() bool { return rg.g.InFlight(id, "old") == 1 })
	queued := rg.goDo(rg.newRequest(context.Background(), "GET", "mv.default.localhost", "/", ""))
	eventually(t, "queued on the replica", func() bool { return rg.g.Queued(id) == 1 })
	rg.g.SetEndpoints(id, []workload.Endpoint{backend(t, "new", named("new"))})
	if res := <-queued; res.code != 200 || res.body != "new:" {
		t.Fatalf("moved request: %d %q", res.code, res.body)
	}
	gt.open()
	if res := <-first; res.code != 200 || res.body != "old" {
		t.Fatalf("first request: %d %q", res.code, res.body)
	}
}
