package gateway

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/workload"

	"github.com/infera-dev/infera/internal/testutil"
)

// BenchmarkOverhead measures the gateway hop against a direct call to the same trivial
// loopback replica, b.N requests each way, spread over the given number of clients. Its
// metrics are the budgets of DESIGN.md: added-p50-us (gateway p50 minus direct p50) and
// throughput-ratio (gateway requests/s over direct requests/s). The same is measured, untimed,
// for two anchors: Knative's own queue-proxy (knative.dev/serving v0.50.0 cmd/queue, a go tool
// of this module, built and run standalone in front of the same replica: DESIGN.md's anchor)
// and a bare httputil.ReverseProxy (queue-proxy's core).
//
//	go test -run '^$' -bench Overhead -benchtime 20000x ./internal/gateway/
func BenchmarkOverhead(b *testing.B) {
	for _, clients := range []int{1, 32} {
		b.Run("clients="+itoa(clients), func(b *testing.B) { benchOverhead(b, clients) })
	}
}

func benchOverhead(b *testing.B, clients int) {
	replica := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Write([]byte("ok"))
	}))
	defer replica.Close()
	g := New(Config{})
	defer g.CloseIdleConnections()
	id := workload.NewRevisionID("default", "bench-00001")
	g.SetRevision(workload.Revision{ID: id, Namespace: "default", Service: "bench", Configuration: "bench", Name: "bench-00001"})
	g.SetEndpoints(id, []workload.Endpoint{{Replica: "r1", Addr: replica.Listener.Addr().String()}})
	g.SetRoutes([]workload.Route{{Namespace: "default", Service: "bench", Host: "bench.default.localhost",
		Targets: []workload.Target{{Revision: id, Percent: 100}}}})
	front := httptest.NewServer(g.Handler())
	defer front.Close()
	// The anchor: net/http/httputil's ReverseProxy, the core of Knative's queue-proxy, alone.
	target, _ := url.Parse(replica.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true}
	defer rp.Transport.(*http.Transport).CloseIdleConnections()
	anchor := httptest.NewServer(rp)
	defer anchor.Close()
	qp := startQueueProxy(b, replica.Listener.Addr().(*net.TCPAddr).Port)

	tr := &http.Transport{MaxIdleConnsPerHost: 2 * clients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	run := func(url, host string) (p50 time.Duration, rps float64) {
		lat := make([][]time.Duration, clients)
		var wg sync.WaitGroup
		start := time.Now()
		for c := range clients {
			n := b.N / clients
			if c < b.N%clients {
				n++
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				mine := make([]time.Duration, 0, n)
				for range n {
					req, _ := http.NewRequest(http.MethodGet, url, nil)
					req.Host = host
					t0 := time.Now()
					res, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
					mine = append(mine, time.Since(t0))
				}
				lat[c] = mine
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		all := slices.Concat(lat...)
		slices.Sort(all)
		if len(all) == 0 {
			return 0, 0
		}
		return all[len(all)/2], float64(len(all)) / elapsed.Seconds()
	}
	// Warm both paths' connections first.
	run(replica.URL, "")
	run(front.URL, "bench.default.localhost")
	run(anchor.URL, "")
	run(qp, "")
	b.ReportAllocs()
	b.ResetTimer()
	directP50, directRPS := run(replica.URL, "")
	gwP50, gwRPS := run(front.URL, "bench.default.localhost")
	b.StopTimer()
	rpP50, rpRPS := run(anchor.URL, "")
	qpP50, qpRPS := run(qp, "")
	b.ReportMetric(float64(qpP50-directP50)/1e3, "queueproxy-added-p50-us")
	b.ReportMetric(qpRPS/directRPS, "queueproxy-throughput-ratio")
	b.ReportMetric(float64(rpP50-directP50)/1e3, "reverseproxy-added-p50-us")
	b.ReportMetric(rpRPS/directRPS, "reverseproxy-throughput-ratio")
	b.ReportMetric(float64(directP50)/1e3, "direct-p50-us")
	b.ReportMetric(float64(gwP50)/1e3, "gateway-p50-us")
	b.ReportMetric(float64(gwP50-directP50)/1e3, "added-p50-us")
	b.ReportMetric(directRPS, "direct-rps")
	b.ReportMetric(gwRPS, "gateway-rps")
	b.ReportMetric(gwRPS/directRPS, "throughput-ratio")
}

// BenchmarkHeldRequestMemory holds N requests for a revision with no replica and reports
// what each costs: heap-B/held is the gateway's own allocation (request state, context,
// timers, channel), stack-B/held the goroutine that net/http runs every handler on anyway
// (here started by the benchmark, as the server would).
//
//	go test -run '^$' -bench HeldRequestMemory -benchtime 3x ./internal/gateway/
func BenchmarkHeldRequestMemory(b *testing.B) {
	const n = 10000
	g := New(Config{})
	id := workload.NewRevisionID("default", "cold-00001")
	g.SetRoutes([]workload.Route{{Namespace: "default", Service: "cold", Host: "cold.default.localhost",
		Targets: []workload.Target{{Revision: id, Percent: 100}}}})
	reqs := make([]*http.Request, n)
	recs := make([]*httptest.ResponseRecorder, n)
	var heap, stack float64
	for range b.N {
		g.SetRevision(workload.Revision{ID: id, Namespace: "default", Service: "cold", Name: "cold-00001"})
		for i := range n {
			reqs[i] = httptest.NewRequest(http.MethodGet, "http://cold.default.localhost/", nil)
			recs[i] = httptest.NewRecorder()
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				g.ServeHTTP(recs[i], reqs[i])
			}()
		}
		for g.Queued(id) < n {
			runtime.Gosched()
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap += float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
		stack += float64(int64(after.StackInuse)-int64(before.StackInuse)) / n
		g.RemoveRevision(id) // every held request gets 503
		wg.Wait()
		if recs[0].Code != http.StatusServiceUnavailable {
			b.Fatalf("held request ended with %d", recs[0].Code)
		}
		if err := g.Drain(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(heap/float64(b.N), "heap-B/held")
	b.ReportMetric(stack/float64(b.N), "stack-B/held")
}

// BenchmarkAcquireRelease is the balancer and breaker alone: one slot taken and given back.
func BenchmarkAcquireRelease(b *testing.B) {
	g := New(Config{})
	id := workload.NewRevisionID("default", "b-00001")
	g.SetRevision(workload.Revision{ID: id, ContainerConcurrency: 1000})
	var eps []workload.Endpoint
	for i := range 8 {
		eps = append(eps, workload.Endpoint{Replica: "r" + itoa(i), Addr: "127.0.0.1:1"})
	}
	g.SetEndpoints(id, eps)
	r := g.revisionFor(id, false)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var w waiter
		for pb.Next() {
			ep, err := r.acquire(context.Background(), &w)
			if err != nil {
				b.Error(err)
				return
			}
			r.release(ep)
		}
	})
}

var (
	queueOnce sync.Once
	queueBin  string
	queueErr  error
)

// startQueueProxy builds Knative's queue-proxy (once) and runs it standalone in front of the
// replica on userPort, as a revision's sidecar would be: containerConcurrency 0, timeout 300 s.
// It returns its URL once it answers.
func startQueueProxy(b *testing.B, userPort int) string {
	b.Helper()
	queueOnce.Do(func() {
		dir, err := os.MkdirTemp("", "queue-proxy-")
		if err != nil {
			queueErr = err
			return
		}
		queueBin = filepath.Join(dir, "queue")
		out, err := exec.Command("go", "build", "-o", queueBin, "knative.dev/serving/cmd/queue").CombinedOutput()
		if err != nil {
			queueErr = fmt.Errorf("building Knative's queue-proxy: %v\n%s", err, out)
		}
	})
	if queueErr != nil {
		b.Fatal(queueErr)
	}
	port, tlsPort := freePort(b), freePort(b)
	cmd := exec.Command(queueBin)
	cmd.Env = append(os.Environ(),
		"QUEUE_SERVING_PORT="+itoa(port), "QUEUE_SERVING_TLS_PORT="+itoa(tlsPort), "USER_PORT="+itoa(userPort),
		"CONTAINER_CONCURRENCY=0", "REVISION_TIMEOUT_SECONDS=300", "SERVING_LOGGING_CONFIG=", "SERVING_LOGGING_LEVEL=error",
		"SERVING_NAMESPACE=default", "SERVING_CONFIGURATION=bench", "SERVING_REVISION=bench-00001", "SERVING_SERVICE=bench",
		"SERVING_POD=bench-00001-deployment", "SERVING_POD_IP=127.0.0.1")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	url := "http://127.0.0.1:" + itoa(port)
	if !testutil.Poll(30*time.Second, func() bool {
		res, err := http.Get(url)
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}) {
		b.Fatal("Knative's queue-proxy did not answer within 30s")
	}
	return url
}

func freePort(b *testing.B) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var buf [20]byte
	p := len(buf)
	for ; i > 0; i /= 10 {
		p--
		buf[p] = byte('0' + i%10)
	}
	return string(buf[p:])
}
