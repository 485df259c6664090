package container

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/testutil"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestEngineAgainstDockerd drives a real dockerd: a pull with credentials and progress, a run
// whose output is captured, exec with its exit status, listing by label, the stop signal and
// the exit it causes, removal.
func TestEngineAgainstDockerd(t *testing.T) {
	cli := testutil.Docker(t)
	ctx := context.Background()
	e, err := Connect(ctx, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{Username: "u", Password: "secret-pw"})
	ref := reg.Addr() + "/engine/httpapp:v1"
	img := testutil.BuildImage(t, testutil.ImageSpec{
		Files:      map[string]testutil.ImageFile{"/httpapp": {HostPath: testutil.StaticBinary(t, testutil.HTTPApp), Mode: 0o755}},
		Entrypoint: []string{"/httpapp"},
	})
	digest := testutil.PushImageAuth(t, ref, img, "u", "secret-pw")
	t.Cleanup(func() { testutil.RemoveImages(t, cli, ref) })
	t.Cleanup(func() { testutil.RemoveContainersLabeled(t, cli, "dev.infera.test-engine") })

	if _, err := e.Pull(ctx, ref, nil, nil); !errors.Is(err, ErrPull) {
		t.Fatalf("anonymous pull: %v, want ErrPull", err)
	}
	var last PullProgress
	got, err := e.Pull(ctx, ref, &Auth{Server: reg.Addr(), Username: "u", Password: "secret-pw"}, func(p PullProgress) { last = p })
	if err != nil {
		t.Fatal(err)
	}
	if got.DigestRef(ref) != reg.Addr()+"/engine/httpapp@"+digest || got.Size == 0 || last.Status == "" {
		t.Errorf("pulled %+v (digest ref %q), last progress %+v", got, got.DigestRef(ref), last)
	}
	if _, err := e.InspectImage(ctx, reg.Addr()+"/engine/none:v1"); !errors.Is(err, ErrImageNotFound) {
		t.Errorf("inspect of a missing image: %v", err)
	}

	port := freePort(t)
	var out testutil.SyncBuffer
	c, err := e.Run(ctx, Spec{
		Name: "infera-test-engine-" + strconv.Itoa(port), Image: got.ID,
		Env:    []string{"PORT=" + strconv.Itoa(port), "K_REVISION=engine"},
		Labels: map[string]string{"dev.infera.test-engine": "1", LabelReplica: "r1"},
	}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if c.PID <= 0 {
		t.Errorf("pid %d", c.PID)
	}
	testutil.Eventually(t, 30*time.Second, "the container answers", func() (bool, string) {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	list, err := e.ListContainers(ctx, map[string]string{"dev.infera.test-engine": "1", LabelReplica: "r1"})
	if err != nil || len(list) != 1 || list[0].ID != c.ID || list[0].State != "running" {
		t.Errorf("list: %+v %v", list, err)
	}
	if code, _, err := e.Exec(ctx, c.ID, []string{"/httpapp", "--probe-file=/httpapp"}); err != nil || code != 0 {
		t.Errorf("exec of a present file: %d %v", code, err)
	}
	if code, _, err := e.Exec(ctx, c.ID, []string{"/httpapp", "--probe-file=/nope"}); err != nil || code != 1 {
		t.Errorf("exec of a missing file: %d %v, want exit status 1", code, err)
	}
	if code, _, err := e.Exec(ctx, c.ID, []string{"/no-such-binary"}); err == nil && code == 0 {
		t.Errorf("exec of a missing binary: exit status 0 and no error")
	}
	if err := c.Signal(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the container did not stop on SIGTERM")
	}
	if d := c.ExitDesc(); d != "exit status 0" {
		t.Errorf("exit %q, want exit status 0 (httpapp exits 0 on SIGTERM)", d)
	}
	if !strings.Contains(out.String(), "httpapp got SIGTERM") {
		t.Errorf("output %q: want the app's own log lines", out.String())
	}
	if list, _ := e.ListContainers(ctx, map[string]string{"dev.infera.test-engine": "1"}); len(list) != 0 {
		t.Errorf("containers after exit: %+v, want it removed", list)
	}
}
