package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/testutil"
	"github.com/infera-dev/infera/internal/workload"
)

func TestEnvContract(t *testing.T) {
	t.Parallel()
	ts := newTestSup(t, Config{})
	wd := t.TempDir()
	rev := testRev("envsvc-00001", "GREETING", "hello", "TR_PRINT_ENV", "TOKEN")
	rev.Configuration = "envsvc-config"
	rev.Container.Env = append(rev.Container.Env, workload.EnvVar{Name: "TOKEN", Value: "s3cr3t-value", Secret: true})
	rev.Container.WorkingDir = wd
	reps := ts.waitReady(t, rev, 1)
	r := reps[0]
	if !regexp.MustCompile(`^envsvc-00001-[bcdfghjklmnpqrstvwxz2456789]{5}$`).MatchString(r.Name) {
		t.Errorf("replica name %q", r.Name)
	}
	eps := ts.gw.endpoints(rev.ID)
	if want := "127.0.0.1:" + strconv.Itoa(r.Port); eps[0].Addr != want || eps[0].Replica != r.Name {
		t.Errorf("endpoint %+v, want %s of %s", eps[0], want, r.Name)
	}
	_, body := get(t, r.Port, "/env")
	var env map[string]string
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"PORT": strconv.Itoa(r.Port), "K_SERVICE": "envsvc", "K_CONFIGURATION": "envsvc-config",
		"K_REVISION": "envsvc-00001", "GREETING": "hello", "TOKEN": "s3cr3t-value",
	} {
		if env[k] != want {
			t.Errorf("env %s = %q, want %q", k, env[k], want)
		}
	}
	if _, cwd := get(t, r.Port, "/cwd"); cwd != wd {
		t.Errorf("working dir %q, want %q", cwd, wd)
	}
	if r.PID == 0 || r.State != Ready || r.Restarts != 0 {
		t.Errorf("status %+v", r)
	}
	// The app printed its secret: it is redacted in the log.
	waitFor(t, "TOKEN line in log", func() bool { return strings.Contains(ts.logOf(t, r.Name), "TOKEN=") })
	if log := ts.logOf(t, r.Name); strings.Contains(log, "s3cr3t-value") || !strings.Contains(log, "TOKEN=[redacted]") {
		t.Errorf("log leaks or lacks the redacted secret:\n%s", log)
	}
	tail, err := ts.LogTail(r.Name)
	if err != nil || !strings.Contains(string(tail), "replica starting") {
		t.Errorf("LogTail = %q, %v", tail, err)
	}
	if bad := ts.gw.badDialList(); bad != nil {
		t.Errorf("endpoints handed over before they accepted connections: %v", bad)
	}
}

func needBwrap(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("bwrap"); err != nil {
		// Never a silent skip: scripts/test.sh installs bubblewrap; without it this fails.
		t.Fatal("bwrap (bubblewrap) not installed: apt-get install bubblewrap (scripts/test.sh does)")
	}
}

func TestVolumesInSandbox(t *testing.T) {
	t.Parallel()
	needBwrap(t)
	ts := newTestSup(t, Config{Sandbox: SandboxBwrap})
	host := t.TempDir()
	os.WriteFile(filepath.Join(host, "model.bin"), []byte("weights"), 0o644)
	os.MkdirAll(filepath.Join(host, "sub"), 0o755)
	os.WriteFile(filepath.Join(host, "sub", "inner.txt"), []byte("inner"), 0o644)
	mnt := filepath.Join(t.TempDir(), "mnt") // does not exist on the host
	rev := testRev("vol-00001")
	rev.Volumes = []workload.Volume{
		{Name: "creds", Kind: workload.VolumeFiles, MountPath: mnt + "/creds", Files: map[string][]byte{"key": []byte("topsecret")}, Secret: true},
		{Name: "cfg", Kind: workload.VolumeFiles, MountPath: mnt + "/etc/app.conf", SubPath: "app.conf", Files: map[string][]byte{"app.conf": []byte("x=1")}},
		{Name: "scratch", Kind: workload.VolumeEmptyDir, MountPath: mnt + "/scratch"},
		{Name: "models", Kind: workload.VolumeHostPath, HostPath: host, MountPath: mnt + "/models", ReadOnly: true},
		{Name: "data", Kind: workload.VolumeHostPath, HostPath: host, SubPath: "sub", MountPath: mnt + "/data"},
	}
	// The exec readiness probe reads the secret: it runs in the replica's mount namespace.
	rev.Container.ReadinessProbe = &workload.Probe{Handler: workload.ProbeExec, Command: []string{"cat", mnt + "/creds/key"}}
	r := ts.waitReady(t, rev, 1)[0]

	tests := []struct {
		name, path, wantCode, wantBody string
	}{
		{"secret content", "/file?path=" + mnt + "/creds/key", "200", "topsecret"},
		{"secret mode: Kubernetes' defaultMode", "/stat?path=" + mnt + "/creds/key", "200", "644"},
		{"configMap subPath file", "/file?path=" + mnt + "/etc/app.conf", "200", "x=1"},
		{"emptyDir writable", "/write?path=" + mnt + "/scratch/f", "200", "ok"},
		{"emptyDir read back", "/file?path=" + mnt + "/scratch/f", "200", "written"},
		{"host path", "/file?path=" + mnt + "/models/model.bin", "200", "weights"},
		{"readOnly refuses writes", "/write?path=" + mnt + "/models/new", "500", "read-only file system"},
		{"secret is read-only", "/write?path=" + mnt + "/creds/other", "500", "read-only file system"},
		{"subPath of host path", "/file?path=" + mnt + "/data/inner.txt", "200", "inner"},
	}
	for _, tt := range tests {
		code, body := get(t, r.Port, tt.path)
		if strconv.Itoa(code) != tt.wantCode || !strings.Contains(body, tt.wantBody) {
			t.Errorf("%s: GET %s = %d %q, want %s %q", tt.name, tt.path, code, body, tt.wantCode, tt.wantBody)
		}
	}
	// The mounts are private to the replica: the host sees only empty mount points.
	if _, err := os.Stat(mnt + "/creds/key"); err == nil {
		t.Error("secret file visible on the host at its mountPath")
	}
	if _, err := os.Stat(filepath.Join(host, "new")); err == nil {
		t.Error("write through a readOnly volume reached the host")
	}
	if b, err := os.ReadFile(filepath.Join(ts.dir, "run", r.Name, "empty", "scratch", "f")); err != nil || string(b) != "written" {
		t.Errorf("emptyDir backing file: %q, %v", b, err)
	}
}

func TestVolumesWithoutSandbox(t *testing.T) {
	t.Parallel()
	ts := newTestSup(t, Config{Sandbox: SandboxNone})
	host := t.TempDir()
	os.WriteFile(filepath.Join(host, "model.bin"), []byte("weights"), 0o644)
	rev := testRev("novol-00001")
	rev.Volumes = []workload.Volume{
		{Name: "my-creds", Kind: workload.VolumeFiles, MountPath: "/var/run/creds", Files: map[string][]byte{"key": []byte("topsecret")}},
		{Name: "scratch", Kind: workload.VolumeEmptyDir, MountPath: "/scratch"},
		{Name: "models", Kind: workload.VolumeHostPath, HostPath: host, MountPath: "/models"},
	}
	r := ts.waitReady(t, rev, 1)[0]
	_, body := get(t, r.Port, "/env")
	var env map[string]string
	json.Unmarshal([]byte(body), &env)
	if env["INFERA_VOLUME_MODELS"] != host {
		t.Errorf("INFERA_VOLUME_MODELS = %q, want %q", env["INFERA_VOLUME_MODELS"], host)
	}
	if _, b := get(t, r.Port, "/file?path="+env["INFERA_VOLUME_MY_CREDS"]+"/key"); b != "topsecret" {
		t.Errorf("secret via INFERA_VOLUME_MY_CREDS: %q", b)
	}
	if _, b := get(t, r.Port, "/write?path="+env["INFERA_VOLUME_SCRATCH"]+"/f"); b != "ok" {
		t.Errorf("emptyDir via INFERA_VOLUME_SCRATCH not writable: %q", b)
	}
}

// Not parallel: it changes PATH so that no bwrap is found.
func TestVolumesNeedSandbox(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	if _, err := New(Config{Dir: t.TempDir(), Gateway: &fakeGateway{}, Sandbox: SandboxBwrap}); err == nil {
		t.Error("New with Sandbox bwrap and no bwrap: no error")
	}
	ts := newTestSup(t, Config{})
	rev := testRev("needsb-00001")
	rev.Volumes = []workload.Volume{{Name: "scratch", Kind: workload.VolumeEmptyDir, MountPath: "/scratch"}}
	ts.Scale(rev, 1)
	waitFor(t, "revision failed", func() bool { return ts.Status(rev.ID).Failed })
	st := ts.Status(rev.ID)
	if !strings.Contains(st.Message, "--sandbox=none") || strings.Contains(st.Message, "\n") {
		t.Errorf("message %q: want one line naming --sandbox=none", st.Message)
	}
	if len(ts.gw.endpoints(rev.ID)) != 0 {
		t.Error("failed replica has endpoints")
	}
}

func TestReadiness(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		env   []string
		probe *workload.Probe
	}{
		{"default TCP probe on a slow starter", []string{"TR_START_DELAY", "300ms"}, nil},
		{"HTTP aggressive", nil, &workload.Probe{Handler: workload.ProbeHTTP, Path: "/ready", Headers: map[string]string{"X-Probe": "yes"}}},
		{"HTTP with period", nil, &workload.Probe{Handler: workload.ProbeHTTP, Path: "ready", Period: 100 * time.Millisecond, Timeout: time.Second, SuccessThreshold: 2, FailureThreshold: 1}},
		{"gRPC", []string{"TR_GRPC", "1"}, &workload.Probe{Handler: workload.ProbeGRPC}},
		{"exec", nil, &workload.Probe{Handler: workload.ProbeExec, Command: []string{"true"}}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts := newTestSup(t, Config{})
			rev := testRev("ready"+strconv.Itoa(i)+"-00001", tt.env...)
			rev.Container.ReadinessProbe = tt.probe
			ts.waitReady(t, rev, 1)
			if bad := ts.gw.badDialList(); bad != nil {
				t.Errorf("endpoints handed over before they accepted connections: %v", bad)
			}
		})
	}
}

func TestHTTPReadinessGatesEndpoints(t *testing.T) {
	t.Parallel()
	ts := newTestSup(t, Config{})
	readyFile := filepath.Join(t.TempDir(), "ready")
	rev := testRev("gate-00001", "TR_READY_FILE", readyFile)
	rev.Container.ReadinessProbe = &workload.Probe{Handler: workload.ProbeHTTP, Path: "/ready", Headers: map[string]string{"X-Probe": "yes"}}
	ts.Scale(rev, 1)
	var port int
	waitFor(t, "replica probed several times", func() bool {
		rs := ts.replicasOf(rev.ID)
		if len(rs) != 1 || rs[0].PID == 0 {
			return false
		}
		port = rs[0].Port
		res, err := httpGetQuiet(port, "/hits")
		n, _ := strconv.Atoi(strings.Fields(res + " 0")[0])
		return err == nil && n >= 3
	})
	if eps := ts.gw.endpoints(rev.ID); len(eps) != 0 {
		t.Fatalf("endpoints while the readiness probe fails: %v", eps)
	}
	if st := ts.replicasOf(rev.ID)[0].State; st != Starting {
		t.Errorf("state %s, want Starting", st)
	}
	_, hits := get(t, port, "/hits")
	if !strings.Contains(hits, " kube-probe/") || !strings.HasSuffix(hits, "|yes") {
		t.Errorf("probe request did not carry kube-probe User-Agent and the probe's header: %q", hits)
	}
	os.WriteFile(readyFile, nil, 0o644)
	waitFor(t, "endpoint after readiness", func() bool { return len(ts.gw.endpoints(rev.ID)) == 1 })
	// Ready again fails: after queue-proxy's 10 s poll the replica leaves the endpoints.
	// (Not waited for here; see TestAggressiveReadinessNumbers for the numbers.)
}

func TestAggressiveReadinessNumbers(t *testing.T) {
	if workload.AggressiveProbePeriod != 50*time.Millisecond || workload.AggressiveProbeTimeout != 100*time.Millisecond ||
		aggressivePollTimeout != 10*time.Second || readyRecheckPeriod != time.Second {
		t.Error("aggressive readiness numbers differ from Knative queue-proxy's")
	}
}

func httpGetQuiet(port int, path string) (string, error) {
	res, err := httpClient.Get("http://127.0.0.1:" + strconv.Itoa(port) + path)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return string(b), err
}

func TestProbeFailureRestarts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		env      []string
		liveness *workload.Probe
		startup  *workload.Probe
		message  string
	}{
		{"liveness", []string{"TR_LIVE_FAIL_AFTER", "3"},
			// The startup probe keeps the liveness probe from killing a slow starter.
			&workload.Probe{Handler: workload.ProbeHTTP, Path: "/live", Period: 50 * time.Millisecond, FailureThreshold: 2},
			&workload.Probe{Handler: workload.ProbeTCP, Period: 20 * time.Millisecond, FailureThreshold: 1000},
			"liveness probe failed: HTTP probe got status code 500"},
		{"startup", []string{"TR_READY_FILE", "/nonexistent"},
			nil, &workload.Probe{Handler: workload.ProbeHTTP, Path: "/ready", Period: 20 * time.Millisecond, FailureThreshold: 5},
			"startup probe failed: "}, // 503, or connection refused if the app is slow
		{"startup exec, output redacted", nil,
			nil, &workload.Probe{Handler: workload.ProbeExec, Command: []string{"sh", "-c", "echo token=$TOKEN; exit 1"}, Period: 20 * time.Millisecond, FailureThreshold: 2},
			"startup probe failed: exec probe: exit status 1: token=[redacted]"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts := newTestSup(t, Config{})
			rev := testRev("probefail"+strconv.Itoa(i)+"-00001", tt.env...)
			rev.Container.LivenessProbe, rev.Container.StartupProbe = tt.liveness, tt.startup
			rev.Container.Env = append(rev.Container.Env, workload.EnvVar{Name: "TOKEN", Value: "s3cr3t", Secret: true})
			ts.Scale(rev, 1)
			waitFor(t, "restart after a probe failure", func() bool {
				rs := ts.replicasOf(rev.ID)
				return len(rs) == 1 && rs[0].Restarts == 1
			})
			r := ts.replicasOf(rev.ID)[0]
			if !strings.HasPrefix(r.Message, tt.message) || r.LastExit == "" {
				t.Errorf("status after restart: %+v, want message %q", r, tt.message)
			}
			if log := ts.logOf(t, r.Name); tt.liveness != nil && !strings.Contains(log, "got SIGTERM") {
				t.Errorf("restart did not SIGTERM the app first: %+v\n%s", r, log)
			}
		})
	}
}

func TestReadinessLost(t *testing.T) {
	t.Parallel()
	ts := newTestSup(t, Config{})
	readyFile := filepath.Join(t.TempDir(), "ready")
	os.WriteFile(readyFile, nil, 0o644)
	rev := testRev("lost-00001", "TR_READY_FILE", readyFile)
	rev.Container.ReadinessProbe = &workload.Probe{Handler: workload.ProbeHTTP, Path: "/ready", Period: 20 * time.Millisecond, Timeout: time.Second, FailureThreshold: 3}
	r := ts.waitReady(t, rev, 1)[0]
	os.Remove(readyFile)
	waitFor(t, "not ready", func() bool {
		rs := ts.replicasOf(rev.ID)
		return len(ts.gw.endpoints(rev.ID)) == 0 && len(rs) == 1 && rs[0].State == NotReady
	})
	os.WriteFile(readyFile, nil, 0o644)
	waitFor(t, "ready again", func() bool { return len(ts.gw.endpoints(rev.ID)) == 1 })
	if rs := ts.replicasOf(rev.ID); rs[0].Restarts != 0 || rs[0].PID != r.PID {
		t.Errorf("readiness loss restarted the replica: %+v", rs[0])
	}
}

func TestStartupProbeGates(t *testing.T) {
	t.Parallel()
	ts := newTestSup(t, Config{})
	readyFile := filepath.Join(t.TempDir(), "started")
	rev := testRev("startup-00001", "TR_READY_FILE", readyFile)
	rev.Container.StartupProbe = &workload.Probe{Handler: workload.ProbeHTTP, Path: "/ready", Period: 20 * time.Millisecond, FailureThreshold: 1000}
	// The readiness probe would pass at once, but the startup probe gates it.
	rev.Container.ReadinessProbe = &workload.Probe{Handler: workload.ProbeHTTP, Path: "/hits"}
	ts.Scale(rev, 1)
	waitFor(t, "startup probing", func() bool {
		rs := ts.replicasOf(rev.ID)
		if len(rs) != 1 || rs[0].PID == 0 {
			return false
		}
		res, err := httpGetQuiet(rs[0].Port, "/hits")
		n, _ := strconv.Atoi(strings.Fields(res + " 0")[0])
		return err == nil && n >= 3
	})
	if len(ts.gw.endpoints(rev.ID)) != 0 {
		t.Fatal("ready before the startup probe passed")
	}
	os.WriteFile(readyFile, nil, 0o644)
	waitFor(t, "ready after startup", func() bool { return len(ts.gw.endpoints(rev.ID)) == 1 })
}

func TestCrashBackoff(t *testing.T) {
	t.Parallel()
	clk := testutil.NewFakeClock(fakeClockStart)
	ts := newTestSup(t, Config{Clock: clk})
	okFile := filepath.Join(t.TempDir(), "ok")
	rev := testRev("crash-00001", "TR_CRASH_UNLESS", okFile)
	ts.Scale(rev, 1)
	state := func() ReplicaStatus {
		rs := ts.replicasOf(rev.ID)
		if len(rs) != 1 {
			return ReplicaStatus{}
		}
		return rs[0]
	}
	// First crash: restarted at once. Then kubelet's back-off: 10 s, 20 s, 40 s...
	for i, wait := range []time.Duration{10 * time.Second, 20 * time.Second, 40 * time.Second} {
		waitFor(t, "back-off of "+wait.String(), func() bool {
			r := state()
			return r.Restarts == i+1 && r.State == CrashLoopBackOff && slices.Contains(clk.Pending(), wait)
		})
		if i == 2 {
			os.WriteFile(okFile, nil, 0o644) // the next start succeeds
		}
		clk.Advance(wait)
	}
	ts.waitFor(t, "ready after the crash loop", func() bool { return ts.Status(rev.ID).Ready == 1 })
	if st := ts.Status(rev.ID); st.Failed || st.Message != "" {
		t.Errorf("status after recovery: %+v", st)
	}
	r := state()
	if r.Restarts != 4 || r.LastExit != "exit status 1" {
		t.Errorf("after recovery: %+v", r)
	}
	// Ten minutes of running resets the back-off: the next crash restarts at once.
	clk.Advance(BackoffReset + time.Second)
	httpGetQuiet(r.Port, "/exit?code=3")
	waitFor(t, "immediate restart after a long run", func() bool {
		r := state()
		return r.Restarts == 5 && r.LastExit == "exit status 3" && r.State != CrashLoopBackOff
	})
	if p := clk.Pending(); slices.ContainsFunc(p, func(d time.Duration) bool { return d >= BackoffInitial }) {
		t.Errorf("back-off pending after reset: %v", p)
	}
}

func TestFailedBeforeReady(t *testing.T) {
	t.Parallel()
	clk := testutil.NewFakeClock(fakeClockStart)
	ts := newTestSup(t, Config{Clock: clk})
	rev := testRev("fail-00001", "TR_CRASH_UNLESS", "/nonexistent/file")
	ts.Scale(rev, 1)
	waitFor(t, "failed", func() bool { return ts.Status(rev.ID).Failed })
	if st := ts.Status(rev.ID); st.Message != "exit status 1: boom: crashing at start" || st.Desired != 1 || st.Ready != 0 {
		t.Errorf("status %+v", st)
	}
	rev2 := testRev("fail-00002")
	rev2.Container.Command = []string{"/nonexistent/binary"}
	ts.Scale(rev2, 1)
	waitFor(t, "failed start", func() bool { return ts.Status(rev2.ID).Failed })
	if st := ts.Status(rev2.ID); !strings.Contains(st.Message, "/nonexistent/binary") {
		t.Errorf("status %+v", st)
	}
}

func TestGracefulStopOrder(t *testing.T) {
	t.Parallel()
	ts := newTestSup(t, Config{})
	rev := testRev("stop-00001")
	r := ts.waitReady(t, rev, 1)[0]
	release := ts.gw.holdIdle(r.Name)
	ts.Scale(rev, 0)
	waitFor(t, "WaitIdle", func() bool { return slices.Contains(ts.gw.eventList(), "waitidle-start "+r.Name) })
	ev := ts.gw.eventList()
	iSet := slices.Index(ev, "set default/stop-00001 []")
	if iSet < 0 || iSet > slices.Index(ev, "waitidle-start "+r.Name) {
		t.Errorf("endpoints not emptied before WaitIdle: %v", ev)
	}
	if rs := ts.replicasOf(rev.ID); len(rs) != 1 || rs[0].State != Terminating {
		t.Errorf("while draining: %+v", rs)
	}
	if pidGone(r.PID) || strings.Contains(ts.logOf(t, r.Name), "got SIGTERM") {
		t.Fatal("process signalled before WaitIdle returned")
	}
	close(release)
	waitFor(t, "replica gone", func() bool { return len(ts.replicasOf(rev.ID)) == 0 })
	if !strings.Contains(ts.logOf(t, r.Name), "got SIGTERM") {
		t.Error("no SIGTERM")
	}
	waitFor(t, "pid gone", func() bool { return pidGone(r.PID) })
}

func TestKillAfterGrace(t *testing.T) {
	t.Parallel()
	clk := testutil.NewFakeClock(fakeClockStart)
	ts := newTestSup(t, Config{Clock: clk})
	rev := testRev("stubborn-00001", "TR_TERM", "ignore")
	rev.Timeout = 30 * time.Second
	r := ts.waitReady(t, rev, 1)[0]
	ts.Scale(rev, 0)
	waitFor(t, "SIGTERM ignored", func() bool { return strings.Contains(ts.logOf(t, r.Name), "ignoring SIGTERM") })
	waitFor(t, "grace timer", func() bool { return slices.Contains(clk.Pending(), 30*time.Second) })
	if pidGone(r.PID) {
		t.Fatal("killed before the grace period")
	}
	clk.Advance(30 * time.Second)
	waitFor(t, "killed after grace", func() bool { return pidGone(r.PID) && len(ts.replicasOf(rev.ID)) == 0 })
}

func TestScaleDownIdleFirstThenNewest(t *testing.T) {
	t.Parallel()
	ts := newTestSup(t, Config{})
	rev := testRev("down-00001")
	rs := ts.waitReady(t, rev, 3) // oldest first
	oldest, middle, newest := rs[0].Name, rs[1].Name, rs[2].Name
	ts.gw.setInFlight(newest, 1)
	steps := []struct {
		scale int
		gone  string
	}{
		{2, middle}, // the newest is busy: the newest idle one goes
		{1, oldest}, // the busy one stays
	}
	for _, st := range steps {
		ts.Scale(rev, st.scale)
		waitFor(t, st.gone+" stopped", func() bool {
			return !slices.ContainsFunc(ts.replicasOf(rev.ID), func(r ReplicaStatus) bool { return r.Name == st.gone })
		})
		if n := len(ts.replicasOf(rev.ID)); n != st.scale {
			t.Fatalf("scale %d: %d replicas", st.scale, n)
		}
	}
	if left := ts.replicasOf(rev.ID); left[0].Name != newest {
		t.Errorf("left %s, want the busy %s", left[0].Name, newest)
	}
}

func TestShutdownStopsAll(t *testing.T) {
	t.Parallel()
	ts := newTestSup(t, Config{})
	a, b := testRev("alpha-00001"), testRev("beta-00001")
	var pids []int
	for _, r := range append(ts.waitReady(t, a, 1), ts.waitReady(t, b, 2)...) {
		pids = append(pids, r.PID)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if !pidGone(pid) {
			t.Errorf("pid %d alive after Shutdown", pid)
		}
	}
	if n := len(ts.Replicas()); n != 0 {
		t.Errorf("%d replicas after Shutdown", n)
	}
	ts.Scale(a, 1)
	if n := len(ts.Replicas()); n != 0 {
		t.Errorf("Scale after Shutdown started %d replicas", n)
	}
	if len(ts.gw.endpoints(a.ID))+len(ts.gw.endpoints(b.ID)) != 0 {
		t.Error("endpoints left after Shutdown")
	}
}

func TestRemove(t *testing.T) {
	t.Parallel()
	ts := newTestSup(t, Config{})
	rev := testRev("rm-00001")
	r := ts.waitReady(t, rev, 2)
	ts.Remove(rev.ID)
	waitFor(t, "revision forgotten", func() bool { return reflect.DeepEqual(ts.Status(rev.ID), RevisionStatus{}) && len(ts.Replicas()) == 0 })
	for _, x := range r {
		if !pidGone(x.PID) {
			t.Errorf("pid %d alive after Remove", x.PID)
		}
	}
}

func TestParentKilledLeavesNoReplica(t *testing.T) {
	t.Parallel()
	exe, _ := os.Executable()
	for _, volumes := range []string{"0", "1"} {
		t.Run("volumes="+volumes, func(t *testing.T) {
			if volumes == "1" {
				needBwrap(t)
			}
			t.Parallel()
			cmd := exec.Command(exe)
			cmd.Env = append(os.Environ(), "SUPERVISOR_TEST_ROLE=parent", "PARENT_DIR="+t.TempDir(), "PARENT_VOLUMES="+volumes)
			out, _ := cmd.StdoutPipe()
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(out).ReadString('\n')
			if err != nil || !strings.HasPrefix(line, "PID ") {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("parent said %q, %v", line, err)
			}
			pid, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "PID ")))
			if pidGone(pid) {
				t.Fatal("replica not running")
			}
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			waitFor(t, "replica gone after its parent", func() bool { return pidGone(pid) })
		})
	}
}

func TestLogs(t *testing.T) {
	t.Parallel()
	ts := newTestSup(t, Config{})
	rev := testRev("logs-00001")
	r := ts.waitReady(t, rev, 1)[0]
	waitFor(t, "log line", func() bool { return strings.Contains(ts.logOf(t, r.Name), "listening on") })
	ts.Scale(rev, 0)
	waitFor(t, "stopped", func() bool { return len(ts.Replicas()) == 0 })
	if log := ts.logOf(t, r.Name); !strings.Contains(log, "replica starting") || !strings.Contains(log, "got SIGTERM") {
		t.Errorf("log of a stopped replica:\n%s", log)
	}
	for _, name := range []string{"nope-00001-abcde", "../etc/passwd", ""} {
		if _, err := ts.Logs(name); !errors.Is(err, ErrUnknownReplica) {
			t.Errorf("Logs(%q) = %v, want ErrUnknownReplica", name, err)
		}
	}
}

// The gateway may call back into the supervisor from SetEndpoints and InFlight (an
// autoscaler poked by the gateway scaling another revision, say) without deadlocking.
func TestGatewayCallsBack(t *testing.T) {
	t.Parallel()
	gw := &fakeGateway{}
	s, err := New(Config{Dir: t.TempDir(), Gateway: gw})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	a, b := testRev("calla-00001"), testRev("callb-00001")
	gw.onSet = func(id workload.RevisionID, eps []workload.Endpoint) {
		if id == a.ID && len(eps) == 2 {
			s.Scale(b, 1)
			s.Scale(a, 1) // scale-down from within SetEndpoints: InFlight is asked too
		}
	}
	gw.onInFlight = func(id workload.RevisionID) { _ = s.Status(id) }
	s.Scale(a, 2)
	waitFor(t, "b ready and a scaled down", func() bool {
		return len(gw.endpoints(b.ID)) == 1 && len(gw.endpoints(a.ID)) == 1 && s.Status(a.ID).Actual == 1
	})
}

func TestRunStopsOnCancel(t *testing.T) {
	t.Parallel()
	ts := newTestSup(t, Config{})
	pid := ts.waitReady(t, testRev("run-00001"), 1)[0].PID
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ts.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !pidGone(pid) || len(ts.Replicas()) != 0 {
		t.Error("replica left after Run returned")
	}
}
