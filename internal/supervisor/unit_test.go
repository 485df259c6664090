package supervisor

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/infera-dev/infera/internal/workload"
)

func TestBackoff(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		exits []time.Duration // exit times after t0
		waits []time.Duration
	}{
		{"first restart is immediate, then 10s doubling",
			[]time.Duration{0, time.Second, 12 * time.Second, 33 * time.Second},
			[]time.Duration{0, 10 * time.Second, 20 * time.Second, 40 * time.Second}},
		{"capped at 5 min",
			[]time.Duration{0, 1, 2, 3, 4, 5, 6, 7, 8},
			[]time.Duration{0, 10 * time.Second, 20 * time.Second, 40 * time.Second, 80 * time.Second, 160 * time.Second, 300 * time.Second, 300 * time.Second, 300 * time.Second}},
		{"reset after 10 min since the last restart",
			[]time.Duration{0, time.Second, 12*time.Second + BackoffReset + time.Second, 12*time.Second + BackoffReset + 2*time.Second},
			[]time.Duration{0, 10 * time.Second, 0, 10 * time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b backoff
			for i, e := range tt.exits {
				if got := b.next(t0.Add(e)); got != tt.waits[i] {
					t.Errorf("exit %d at %v: wait %v, want %v", i, e, got, tt.waits[i])
				}
			}
		})
	}
}

func TestWithDefaults(t *testing.T) {
	tests := []struct {
		name      string
		in        workload.Probe
		readiness bool
		want      workload.Probe
	}{
		{"aggressive readiness keeps period 0", workload.Probe{}, true, workload.Probe{SuccessThreshold: 1}},
		{"readiness with period", workload.Probe{Period: 5 * time.Second, SuccessThreshold: 2}, true,
			workload.Probe{Period: 5 * time.Second, Timeout: time.Second, SuccessThreshold: 2, FailureThreshold: 3}},
		{"liveness kubelet defaults", workload.Probe{SuccessThreshold: 4}, false,
			workload.Probe{Period: 10 * time.Second, Timeout: time.Second, SuccessThreshold: 1, FailureThreshold: 3}},
	}
	for _, tt := range tests {
		if got := withDefaults(tt.in, tt.readiness); fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("%s: %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestHTTPProbe(t *testing.T) {
	var mu sync.Mutex
	var gotUA, gotHeader, gotHost string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		gotUA, gotHeader, gotHost = r.UserAgent(), r.Header.Get("X-Custom"), r.Host
		mu.Unlock()
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(200)
		case "/redirect":
			http.Redirect(w, r, "/ok", http.StatusFound)
		case "/notmodified":
			w.WriteHeader(304)
		case "/missing":
			w.WriteHeader(404)
		case "/slow":
			time.Sleep(300 * time.Millisecond) // the app being slow
		default:
			w.WriteHeader(500)
		}
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	tr := newProbeTransport()
	tests := []struct {
		path    string
		scheme  string
		timeout time.Duration
		ok      bool
	}{
		{"/ok", "", time.Second, true},
		{"ok", "HTTP", time.Second, true},
		{"/redirect", "", time.Second, true},
		{"/notmodified", "", time.Second, true},
		{"/missing", "", time.Second, false},
		{"/error", "", time.Second, false},
		{"/slow", "", 100 * time.Millisecond, false},
		{"/ok", "HTTPS", time.Second, false},
	}
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), tt.timeout)
		err := httpProbe(ctx, tr, addr, &workload.Probe{Path: tt.path, Scheme: tt.scheme, Headers: map[string]string{"X-Custom": "v", "Host": "app.example"}})
		cancel()
		if (err == nil) != tt.ok {
			t.Errorf("%s %s: err %v, want ok=%v", tt.scheme, tt.path, err, tt.ok)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.HasPrefix(gotUA, "kube-probe/") || gotHeader != "v" || gotHost != "app.example" {
		t.Errorf("probe request: UA %q, X-Custom %q, Host %q", gotUA, gotHeader, gotHost)
	}
}

func TestTCPProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	open := ln.Addr().String()
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln2.Addr().String()
	ln2.Close()
	defer ln.Close()
	for _, tt := range []struct {
		addr string
		ok   bool
	}{{open, true}, {closed, false}} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := tcpProbe(ctx, tt.addr); (err == nil) != tt.ok {
			t.Errorf("%s: %v, want ok=%v", tt.addr, err, tt.ok)
		}
		cancel()
	}
}

func TestGRPCProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingListener{Listener: ln}
	gs := grpc.NewServer()
	hs := health.NewServer() // "" is SERVING
	hs.SetServingStatus("my.Service", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("loading", healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(counted)
	defer gs.Stop()
	up := ln.Addr().String()

	bare := grpc.NewServer() // no health service
	lnBare, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go bare.Serve(lnBare)
	defer bare.Stop()

	lnDown, _ := net.Listen("tcp", "127.0.0.1:0")
	down := lnDown.Addr().String()
	lnDown.Close()

	tests := []struct {
		name, addr, service string
		errHas              string // "" is success
		keepsConn           bool
	}{
		{"SERVING, server-wide", up, "", "", true},
		{"SERVING, named service", up, "my.Service", "", true},
		{"NOT_SERVING", up, "loading", "service unhealthy (status NOT_SERVING)", true},
		{"unknown service", up, "nope", `service "nope" unknown to the server (status SERVICE_UNKNOWN)`, true},
		{"no health service", lnBare.Addr().String(), "", "does not implement grpc.health.v1.Health", true},
		{"server down", down, "", "code = Unavailable", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var g grpcConns
			defer g.close()
			p := &workload.Probe{Handler: workload.ProbeGRPC, Service: tt.service}
			for range 2 { // the second check reuses the first one's connection, or dials again
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				err := g.check(ctx, p, tt.addr)
				cancel()
				if tt.errHas == "" && err != nil || tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)) {
					t.Fatalf("err %v, want one containing %q", err, tt.errHas)
				}
			}
			g.mu.Lock()
			kept := g.conns[p] != nil
			g.mu.Unlock()
			if kept != tt.keepsConn {
				t.Errorf("connection kept after the check: %v, want %v", kept, tt.keepsConn)
			}
		})
	}
	// Every check against the health server above, two per case, went over one connection
	// per case.
	if n, want := counted.accepted.Load(), int64(4); n != want {
		t.Errorf("%d connections accepted for 8 checks, want %d", n, want)
	}
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

func TestLogSink(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "r.log")
	l, err := newLogSink(path, 16, 40, []string{"hunter2"})
	if err != nil {
		t.Fatal(err)
	}
	writes := []string{"password: hun", "ter2 ok\n", "line two\n", "partial", " end\nthird line here\n", "fourth line\n"}
	for _, w := range writes {
		l.Write([]byte(w))
	}
	l.close()
	rc, err := openLog(path, "r")
	if err != nil {
		t.Fatal(err)
	}
	all, _ := io.ReadAll(rc)
	rc.Close()
	want := "password: [redacted] ok\nline two\npartial end\nthird line here\nfourth line\n"
	if string(all) != want {
		t.Errorf("log = %q, want %q", all, want)
	}
	if _, err := os.Stat(path + ".1"); err != nil {
		t.Errorf("no rotation at 40 bytes: %v", err)
	}
	for _, p := range []string{path, path + ".1"} {
		if st, _ := os.Stat(p); st.Size() > 40 {
			t.Errorf("%s is %d bytes, over the 40 byte limit", p, st.Size())
		}
	}
	if got := string(l.tail()); got != "ne\nfourth line\n" && len(got) != 16 {
		t.Errorf("ring = %q, want the last 16 bytes", got)
	}
	if got, want := string(l.tail()), want[len(want)-16:]; got != want {
		t.Errorf("ring = %q, want %q", got, want)
	}
	if l.lastLine() != "fourth line" {
		t.Errorf("last line %q", l.lastLine())
	}
}

func TestRing(t *testing.T) {
	tests := []struct {
		size   int
		writes []string
		want   string
	}{
		{8, []string{"abc"}, "abc"},
		{8, []string{"abcdefgh"}, "abcdefgh"},
		{8, []string{"abcde", "fghij"}, "cdefghij"},
		{8, []string{"0123456789abc"}, "56789abc"},
		{4, []string{"ab", "cd", "ef"}, "cdef"},
	}
	for _, tt := range tests {
		r := ring{buf: make([]byte, tt.size)}
		for _, w := range tt.writes {
			r.write([]byte(w))
		}
		if got := string(r.bytes()); got != tt.want {
			t.Errorf("%v into %d: %q, want %q", tt.writes, tt.size, got, tt.want)
		}
	}
}

func TestVolumeEnvName(t *testing.T) {
	for in, want := range map[string]string{"models": "INFERA_VOLUME_MODELS", "my-cache.v2": "INFERA_VOLUME_MY_CACHE_V2"} {
		if got := volumeEnvName(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func TestLogRetention(t *testing.T) {
	dir := t.TempDir()
	logs := filepath.Join(dir, "logs")
	os.MkdirAll(logs, 0o700)
	leftover := filepath.Join(dir, "run", "old-00001-aaaaa", "files", "creds", "key")
	os.MkdirAll(filepath.Dir(leftover), 0o700)
	os.WriteFile(leftover, []byte("secret"), 0o600)
	old := time.Now().Add(-time.Hour)
	for i := range MaxStoppedLogs + 5 {
		p := filepath.Join(logs, fmt.Sprintf("old-00001-%05d.log", i))
		os.WriteFile(p, []byte("x"), 0o600)
		os.Chtimes(p, old.Add(time.Duration(i)*time.Second), old.Add(time.Duration(i)*time.Second))
	}
	s, err := New(Config{Dir: dir, Gateway: &fakeGateway{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	ents, _ := os.ReadDir(logs)
	if len(ents) != MaxStoppedLogs {
		t.Errorf("%d log files kept, want %d", len(ents), MaxStoppedLogs)
	}
	for i, want := range map[int]bool{0: false, 4: false, 5: true, MaxStoppedLogs + 4: true} {
		p := filepath.Join(logs, fmt.Sprintf("old-00001-%05d.log", i))
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("log %d kept = %v, want %v", i, err == nil, want)
		}
	}
	if _, err := os.Stat(leftover); err == nil {
		t.Error("secret file of an earlier run left in the run dir")
	}
	if _, err := s.Logs("old-00001-00010"); err != nil {
		t.Errorf("log of a replica from an earlier run: %v", err)
	}
}

func TestDescendants(t *testing.T) {
	children := map[int][]int{1: {2, 3}, 2: {4}, 4: {5}, 9: {10}}
	got := descendants(1, children)
	if len(got) != 5 || got[0] != 1 {
		t.Fatalf("descendants(1) = %v, want 1 and 2, 3, 4, 5", got)
	}
	if got := descendants(7, children); len(got) != 1 || got[0] != 7 {
		t.Errorf("a leaf: %v", got)
	}
	// The live process table has this test's own process under its parent.
	if got := descendants(os.Getppid(), childrenByParent()); !slices.Contains(got, os.Getpid()) {
		t.Errorf("this process is not among its parent's descendants")
	}
}
