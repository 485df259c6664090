package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/infera-dev/infera/internal/testutil"
	"github.com/infera-dev/infera/internal/workload"
)

// The test binary doubles as a replica (SUPERVISOR_TEST_ROLE=replica) and as an infera
// parent process that gets SIGKILLed (SUPERVISOR_TEST_ROLE=parent).
func TestMain(m *testing.M) {
	switch os.Getenv("SUPERVISOR_TEST_ROLE") {
	case "replica":
		replicaMain()
		return
	case "parent":
		parentMain()
		return
	}
	os.Exit(m.Run())
}

// replicaMain is a tiny app on $PORT whose behaviour is chosen by env:
//
//	TR_CRASH_UNLESS=<file>   exit 1 at start unless the file exists
//	TR_START_DELAY=<dur>     wait before listening
//	TR_READY_FILE=<file>     /ready answers 200 only while the file exists
//	TR_LIVE_FAIL_AFTER=<n>   /live answers 500 after n calls
//	TR_TERM=ignore           log and ignore SIGTERM (default: log, finish, exit 0)
//	TR_GRPC=<status>         serve only grpc.health.v1, "" answering that status (1 is SERVING)
//	TR_PRINT_ENV=<name>      print "<name>=<value>" at start
func replicaMain() {
	fmt.Println("replica starting pid", os.Getpid())
	if name := os.Getenv("TR_PRINT_ENV"); name != "" {
		fmt.Printf("%s=%s\n", name, os.Getenv(name))
	}
	if f := os.Getenv("TR_CRASH_UNLESS"); f != "" {
		if _, err := os.Stat(f); err != nil {
			fmt.Fprintln(os.Stderr, "boom: crashing at start")
			os.Exit(1)
		}
	}
	if d, err := time.ParseDuration(os.Getenv("TR_START_DELAY")); err == nil {
		time.Sleep(d) // the app being slow, not the test waiting
	}
	var readyHits, liveHits atomic.Int64
	var lastUA, lastProbeHeader atomic.Value
	lastUA.Store("")
	lastProbeHeader.Store("")
	mux := http.NewServeMux()
	mux.HandleFunc("/env", func(w http.ResponseWriter, _ *http.Request) {
		env := map[string]string{}
		for _, kv := range os.Environ() {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		_ = json.NewEncoder(w).Encode(env)
	})
	mux.HandleFunc("/cwd", func(w http.ResponseWriter, _ *http.Request) {
		wd, _ := os.Getwd()
		fmt.Fprint(w, wd)
	})
	mux.HandleFunc("/file", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(r.URL.Query().Get("path"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Write(b)
	})
	mux.HandleFunc("/stat", func(w http.ResponseWriter, r *http.Request) {
		st, err := os.Stat(r.URL.Query().Get("path"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		fmt.Fprintf(w, "%o", st.Mode().Perm())
	})
	mux.HandleFunc("/write", func(w http.ResponseWriter, r *http.Request) {
		if err := os.WriteFile(r.URL.Query().Get("path"), []byte("written"), 0o644); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
		readyHits.Add(1)
		lastUA.Store(r.UserAgent())
		lastProbeHeader.Store(r.Header.Get("X-Probe"))
		if f := os.Getenv("TR_READY_FILE"); f != "" {
			if _, err := os.Stat(f); err != nil {
				http.Error(w, "not yet", http.StatusServiceUnavailable)
				return
			}
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("/hits", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "%d %s|%s", readyHits.Load(), lastUA.Load(), lastProbeHeader.Load())
	})
	mux.HandleFunc("/live", func(w http.ResponseWriter, _ *http.Request) {
		n := liveHits.Add(1)
		if limit, err := strconv.Atoi(os.Getenv("TR_LIVE_FAIL_AFTER")); err == nil && n > int64(limit) {
			http.Error(w, "dead", http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("/exit", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.URL.Query().Get("code"))
		fmt.Println("exiting with", code)
		os.Exit(code)
	})
	srv := &http.Server{Handler: mux}
	serve, shutdown := srv.Serve, func() { srv.Shutdown(context.Background()) }
	if st := os.Getenv("TR_GRPC"); st != "" {
		status, _ := strconv.Atoi(st)
		gs := grpc.NewServer()
		hs := health.NewServer()
		hs.SetServingStatus("", healthpb.HealthCheckResponse_ServingStatus(status))
		healthpb.RegisterHealthServer(gs, hs)
		serve, shutdown = gs.Serve, gs.GracefulStop
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("PORT"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(2)
	}
	fmt.Println("listening on", ln.Addr())
	go func() {
		for range sigs {
			if os.Getenv("TR_TERM") == "ignore" {
				fmt.Println("ignoring SIGTERM")
				continue
			}
			fmt.Println("got SIGTERM")
			shutdown()
			os.Exit(0)
		}
	}()
	_ = serve(ln)
	select {} // Shutdown in progress: the signal goroutine exits
}

// parentMain runs a supervisor with one replica (with volumes when PARENT_VOLUMES=1),
// prints the replica's pid and waits to be killed.
func parentMain() {
	gw := &fakeGateway{}
	changed := make(chan struct{}, 1)
	onChange := func(workload.RevisionID) {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	s, err := New(Config{Dir: os.Getenv("PARENT_DIR"), Gateway: gw, OnChange: onChange})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	rev := testRev("parent-00001")
	if os.Getenv("PARENT_VOLUMES") == "1" {
		rev.Volumes = []workload.Volume{{Name: "scratch", Kind: workload.VolumeEmptyDir, MountPath: filepath.Join(os.Getenv("PARENT_DIR"), "mnt")}}
	}
	s.Scale(rev, 1)
	timeout := time.After(20 * time.Second)
	for {
		if rs := s.Replicas(); len(rs) == 1 && rs[0].State == Ready {
			fmt.Println("PID", rs[0].PID)
			select {}
		}
		select {
		case <-changed:
			continue
		case <-timeout:
		}
		break
	}
	fmt.Println("error: replica not ready")
	os.Exit(1)
}

// fakeGateway stands in for internal/gateway: it records endpoint updates and lets tests
// set in-flight counts and hold WaitIdle.
type fakeGateway struct {
	mu       sync.Mutex
	eps      map[workload.RevisionID][]workload.Endpoint
	events   []string
	inFlight map[string]int
	hold     map[string]chan struct{}
	badDials []string
	// onSet, onInFlight: called (outside the fake's lock) to call back into the supervisor.
	onSet      func(id workload.RevisionID, eps []workload.Endpoint)
	onInFlight func(id workload.RevisionID)
}

func (g *fakeGateway) SetEndpoints(id workload.RevisionID, eps []workload.Endpoint) {
	var names []string
	for _, e := range eps {
		names = append(names, e.Replica)
		// Readiness gates traffic: every endpoint handed over must accept connections.
		if c, err := net.DialTimeout("tcp", e.Addr, time.Second); err != nil {
			g.mu.Lock()
			g.badDials = append(g.badDials, e.Addr)
			g.mu.Unlock()
		} else {
			c.Close()
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.eps == nil {
		g.eps = map[workload.RevisionID][]workload.Endpoint{}
	}
	g.eps[id] = slices.Clone(eps)
	g.events = append(g.events, fmt.Sprintf("set %s %v", id, names))
	if g.onSet != nil {
		g.mu.Unlock()
		g.onSet(id, eps)
		g.mu.Lock()
	}
}

func (g *fakeGateway) InFlight(id workload.RevisionID, replica string) int {
	if g.onInFlight != nil {
		g.onInFlight(id)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inFlight[replica]
}

func (g *fakeGateway) WaitIdle(ctx context.Context, _ workload.RevisionID, replica string) error {
	g.mu.Lock()
	g.events = append(g.events, "waitidle-start "+replica)
	ch := g.hold[replica]
	g.mu.Unlock()
	var err error
	if ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	g.mu.Lock()
	g.events = append(g.events, "waitidle-end "+replica)
	g.mu.Unlock()
	return err
}

func (g *fakeGateway) endpoints(id workload.RevisionID) []workload.Endpoint {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.eps[id])
}

func (g *fakeGateway) badDialList() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.badDials)
}

func (g *fakeGateway) eventList() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.events)
}

func (g *fakeGateway) setInFlight(replica string, n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.inFlight == nil {
		g.inFlight = map[string]int{}
	}
	g.inFlight[replica] = n
}

func (g *fakeGateway) holdIdle(replica string) chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.hold == nil {
		g.hold = map[string]chan struct{}{}
	}
	ch := make(chan struct{})
	g.hold[replica] = ch
	return ch
}

// waitFor polls cond until it holds or 20 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, 20*time.Second, what, func() (bool, string) { return cond(), "" })
}

func testRev(name string, env ...string) workload.Revision {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	svc := name[:strings.LastIndex(name, "-")]
	c := workload.Container{
		Name:    "user-container",
		Command: []string{exe},
		Env:     []workload.EnvVar{{Name: "SUPERVISOR_TEST_ROLE", Value: "replica"}},
		Port:    8080,
	}
	for i := 0; i+1 < len(env); i += 2 {
		c.Env = append(c.Env, workload.EnvVar{Name: env[i], Value: env[i+1]})
	}
	return workload.Revision{
		ID: workload.NewRevisionID("default", name), Namespace: "default",
		Service: svc, Configuration: svc, Name: name,
		Timeout: 5 * time.Second, Container: c,
	}
}

type testSup struct {
	*Supervisor
	gw  *fakeGateway
	dir string
	clk *testutil.FakeClock // Config.Clock when it is one; nil for the real clock
}

func newTestSup(t *testing.T, cfg Config) *testSup {
	t.Helper()
	gw := &fakeGateway{}
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	cfg.Gateway = gw
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	clk, _ := cfg.Clock.(*testutil.FakeClock)
	return &testSup{Supervisor: s, gw: gw, dir: cfg.Dir, clk: clk}
}

// waitFor waits until cond holds, as the package's waitFor does. On a fake clock it also
// moves the clock on by one aggressive probe period between looks, since the replicas' probes
// (and every other wait of the supervisor) run on it: a starting replica is probed again
// only when the clock passes its next check.
func (ts *testSup) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if ts.clk == nil {
		waitFor(t, what, cond)
		return
	}
	testutil.Eventually(t, 20*time.Second, what, func() (bool, string) {
		if cond() {
			return true, ""
		}
		ts.clk.Advance(workload.AggressiveProbePeriod)
		return false, "fake clock at " + ts.clk.Now().Format(time.RFC3339Nano)
	})
}

func (ts *testSup) replicasOf(id workload.RevisionID) []ReplicaStatus {
	var out []ReplicaStatus
	for _, r := range ts.Replicas() {
		if r.Revision == id {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b ReplicaStatus) int { return a.Created.Compare(b.Created) })
	return out
}

// waitReady scales rev to n and waits until n replicas are in the gateway's endpoints.
func (ts *testSup) waitReady(t *testing.T, rev workload.Revision, n int) []ReplicaStatus {
	t.Helper()
	ts.Scale(rev, n)
	ts.waitFor(t, fmt.Sprintf("%d ready endpoints of %s", n, rev.ID), func() bool {
		return len(ts.gw.endpoints(rev.ID)) == n && ts.Status(rev.ID).Ready == n
	})
	return ts.replicasOf(rev.ID)
}

func (ts *testSup) logOf(t *testing.T, replica string) string {
	t.Helper()
	rc, err := ts.Logs(replica)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func get(t *testing.T, port int, path string) (int, string) {
	t.Helper()
	res, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// pidGone reports whether a process no longer exists (or is a zombie nobody reaped yet).
func pidGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && len(b) > i+2 && (b[i+2] == 'Z' || b[i+2] == 'X')
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

// fakeClockStart is where the tests' fake clocks start.
var fakeClockStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
