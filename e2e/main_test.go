// Package e2e runs infera end to end: the real binary (`infera up` as a child process), real
// replica processes, real sockets. Replicas are this test binary re-executed as a small HTTP app
// (see app_test.go), or `infera model-server`.
package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/infera-dev/infera/internal/adminapi"
	"github.com/infera-dev/infera/internal/container"

	"github.com/infera-dev/infera/internal/testutil"
)

var (
	inferaBin string // built once by TestMain
	appBin    string // this test binary, run as a replica app
)

func TestMain(m *testing.M) {
	if os.Getenv(appEnv) != "" {
		runApp()
		return
	}
	dir, err := os.MkdirTemp("", "infera-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	inferaBin = filepath.Join(dir, "infera")
	build := exec.Command("go", "build", "-o", inferaBin, "github.com/infera-dev/infera/cmd/infera")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building infera:", err)
		os.Exit(1)
	}
	if appBin, err = os.Executable(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// up is a running `infera up`.
type up struct {
	t        testing.TB
	cmd      *exec.Cmd
	gateway  string // host:port
	admin    string
	stateDir string
	out      *testutil.SyncBuffer
	client   *adminapi.Client
	done     chan error
}

var addrLine = regexp.MustCompile(`^(gateway|admin)\s+http://(\S+)`)

// startUp runs `infera up -f manifests` on free ports and waits until it listens.
func startUp(t testing.TB, manifests string, args ...string) *up {
	t.Helper()
	dir := t.TempDir()
	return startUpIn(t, dir, manifests, args...)
}

func startUpIn(t testing.TB, stateDir, manifests string, args ...string) *up {
	t.Helper()
	argv := []string{"up", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--state-dir", stateDir, "--log-level", "debug"}
	if manifests != "" {
		f := filepath.Join(t.TempDir(), "manifests.yaml")
		if err := os.WriteFile(f, []byte(manifests), 0o600); err != nil {
			t.Fatal(err)
		}
		argv = append(argv, "-f", f)
	}
	argv = append(argv, args...)
	cmd := exec.Command(inferaBin, argv...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &testutil.SyncBuffer{}
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	u := &up{t: t, cmd: cmd, stateDir: stateDir, out: out, done: make(chan error, 1)}
	addrs := make(chan [2]string, 4)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			out.Write([]byte(line + "\n"))
			if m := addrLine.FindStringSubmatch(line); m != nil {
				addrs <- [2]string{m[1], m[2]}
			}
		}
		u.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		u.stop(syscall.SIGKILL)
		removeStateDirContainers(stateDir)
	})
	deadline := time.After(60 * time.Second)
	for u.gateway == "" || u.admin == "" {
		select {
		case a := <-addrs:
			if a[0] == "gateway" {
				u.gateway = a[1]
			} else {
				u.admin = a[1]
			}
		case err := <-u.done:
			t.Fatalf("infera up exited before listening: %v\n%s", err, out)
		case <-deadline:
			t.Fatalf("infera up did not listen within 60s\n%s", out)
		}
	}
	u.client = adminapi.NewClient(u.admin)
	return u
}

// stop signals infera up and waits for it to exit; it returns the exit error.
func (u *up) stop(sig syscall.Signal) error {
	if u.cmd.ProcessState != nil {
		return nil
	}
	u.cmd.Process.Signal(sig)
	select {
	case err := <-u.done:
		u.done <- err
		return err
	case <-time.After(90 * time.Second):
		syscall.Kill(-u.cmd.Process.Pid, syscall.SIGKILL)
		u.t.Errorf("infera up did not exit within 90s of %v\n%s", sig, u.out)
		return <-u.done
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	testutil.Eventually(t, within, what, cond)
}

// waitReady waits until the service is Ready.
func (u *up) waitReady(name string) adminapi.ServiceView {
	u.t.Helper()
	var got adminapi.ServiceView
	eventually(u.t, 60*time.Second, "service "+name+" ready", func() (bool, string) {
		svcs, err := u.client.Services(context.Background())
		if err != nil {
			return false, err.Error()
		}
		for _, s := range svcs {
			if s.Name == name {
				got = s
				return s.Ready == "True", fmt.Sprintf("%+v\n%s", s, u.out)
			}
		}
		return false, "no such service\n" + u.out.String()
	})
	return got
}

func (u *up) revisions(t testing.TB) []adminapi.RevisionView {
	t.Helper()
	revs, err := u.client.Revisions(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return revs
}

func (u *up) replicas(t testing.TB) []adminapi.Replica {
	t.Helper()
	reps, err := u.client.Replicas(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return reps
}

// apply applies manifests to the running up.
func (u *up) apply(t testing.TB, manifests string) adminapi.ApplyResult {
	t.Helper()
	cmd := exec.Command(inferaBin, "apply", "--admin", u.admin, "-f", "-")
	cmd.Stdin = strings.NewReader(manifests)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("infera apply: %v\n%s", err, out)
	}
	return adminapi.ApplyResult{}
}

var httpClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: 120 * time.Second}

// get sends a request for host through the gateway.
func (u *up) do(method, host, path string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequest(method, "http://"+u.gateway+path, body)
	if err != nil {
		return nil, err
	}
	req.Host = host
	return httpClient.Do(req)
}

func (u *up) get(t testing.TB, host, path string) (int, string) {
	t.Helper()
	resp, err := u.do(http.MethodGet, host, path, nil)
	if err != nil {
		t.Fatalf("GET %s%s: %v", host, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func mustJSON(t testing.TB, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
}

// removeStateDirContainers removes the containers an infera up on stateDir left when it was
// killed (a SIGKILLed infera cannot remove them; the next one on the same directory would).
// Without an engine there is nothing to remove.
func removeStateDirContainers(stateDir string) {
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	f := make(client.Filters).Add("label", container.LabelStateDir+"="+stateDir)
	res, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return
	}
	for _, c := range res.Items {
		_, _ = cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	}
}
