package testutil

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"
)

// httpAppImage is httpapp alone in an image, running as nobody.
func httpAppImage(t *testing.T) ImageSpec {
	return ImageSpec{
		Files:      map[string]ImageFile{"/httpapp": {HostPath: StaticBinary(t, HTTPApp), Mode: 0o755}},
		Entrypoint: []string{"/httpapp"},
		Env:        []string{"APP_VERSION=v1"},
		User:       "65534:65534",
		Labels:     map[string]string{"org.infera.test": "testutil"},
	}
}

// get is one GET of a loopback URL: its status and body, or the error as the body.
func get(url string) (int, string) {
	// A connection of its own each time, so that an answer says something about the server's
	// accept loop.
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestHTTPApp(t *testing.T) {
	bin := StaticBinary(t, HTTPApp)
	if again := StaticBinary(t, HTTPApp); again != bin {
		t.Errorf("a second StaticBinary built again: %s, then %s", bin, again)
	}
	probe := t.TempDir() + "/ready"
	if exec.Command(bin, "--probe-file="+probe).Run() == nil {
		t.Error("--probe-file of a missing file exits 0")
	}
	if err := os.WriteFile(probe, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command(bin, "--probe-file="+probe).Run(); err != nil {
		t.Errorf("--probe-file of an existing file: %v", err)
	}
	if out, err := exec.Command(bin, "--fail-start").Output(); err == nil || !strings.Contains(string(out), "failing on purpose") {
		t.Errorf("--fail-start: %v, %q", err, out)
	}

	_, port, _ := net.SplitHostPort(freeLoopbackAddr(t))
	cmd := exec.Command(bin, "--port", port, "--ready-after=200ms", "extra-arg")
	cmd.Env = append(os.Environ(), "K_REVISION=rev-1", "APP_VERSION=v7", "HTTPAPP_TEST=seen")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "httpapp listening on :"+port {
		t.Fatalf("first line %q", lines.Text())
	}
	base := "http://127.0.0.1:" + port
	if code, _ := get(base + "/healthz"); code != http.StatusServiceUnavailable {
		t.Errorf("/healthz before --ready-after: %d", code)
	}
	Eventually(t, 5*time.Second, "/healthz ready", func() (bool, string) {
		code, body := get(base + "/healthz")
		return code == http.StatusOK, fmt.Sprint(code, body)
	})
	dir := t.TempDir()
	for _, tc := range []struct {
		path, want string
		code       int
	}{
		{"/", "hello from rev-1 version=v7\n", 200},
		{"/env?name=HTTPAPP_TEST", "seen", 200},
		{"/write?path=" + dir + "/f", "ok", 200},
		{"/file?path=" + dir + "/f", "x", 200},
		{"/file?path=" + dir + "/missing", "", 404},
		{"/write?path=" + dir + "/no/such/dir", "", 500},
		{"/id", fmt.Sprintf("uid=%d gid=%d", os.Getuid(), os.Getgid()), 200},
		{"/args", bin + "\n--port\n" + port + "\n--ready-after=200ms\nextra-arg", 200},
		{"/sleep?d=10ms", "slept", 200},
	} {
		code, body := get(base + tc.path)
		if code != tc.code || (tc.want != "" && body != tc.want) {
			t.Errorf("GET %s: %d %q, want %d %q", tc.path, code, body, tc.code, tc.want)
		}
	}

	// SIGTERM while a request is in flight: the request finishes, then the app exits 0. The
	// server accepts connections in order, so once a later connection is answered the sleep
	// request's has been accepted, and Shutdown waits for it.
	inFlight, err := net.Dial("tcp", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer inFlight.Close()
	if _, err := io.WriteString(inFlight, "GET /sleep?d=300ms HTTP/1.1\r\nHost: httpapp\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if code, body := get(base + "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(inFlight), nil)
	if err != nil {
		t.Fatalf("the request in flight at SIGTERM: %v", err)
	}
	if body, _ := io.ReadAll(resp.Body); string(body) != "slept" {
		t.Errorf("the request in flight at SIGTERM got %d %q", resp.StatusCode, body)
	}
	var rest []string
	for lines.Scan() {
		rest = append(rest, lines.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
	if !slices.Equal(rest, []string{"httpapp got SIGTERM"}) {
		t.Errorf("output after SIGTERM %q", rest)
	}
}

func TestRegistryPullWithAuth(t *testing.T) {
	cli := Docker(t)
	reg := StartRegistry(t, RegistryOptions{Username: "infera", Password: "s3cret"})
	if code, _ := get("http://" + reg.Addr() + "/v2/"); code != http.StatusUnauthorized {
		t.Errorf("GET /v2/ without credentials: %d, want 401", code)
	}
	img := BuildImage(t, httpAppImage(t))
	ref := reg.Addr() + "/testutil/httpapp:v1"
	digest := PushImageAuth(t, ref, img, "infera", "s3cret")
	if !strings.HasPrefix(digest, "sha256:") {
		t.Errorf("digest %q", digest)
	}
	t.Cleanup(func() { RemoveImages(t, cli, ref) })

	pull := func(auth *registry.AuthConfig) error {
		var opts client.ImagePullOptions
		if auth != nil {
			js, err := json.Marshal(auth)
			if err != nil {
				t.Fatal(err)
			}
			opts.RegistryAuth = base64.URLEncoding.EncodeToString(js)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		resp, err := cli.ImagePull(ctx, ref, opts)
		if err != nil {
			return err
		}
		defer resp.Close()
		return resp.Wait(ctx)
	}
	// dockerd 20.10 says "no basic auth credentials" to the first, "unauthorized" to the second.
	if err := pull(nil); err == nil || !strings.Contains(err.Error(), "auth") {
		t.Fatalf("a pull without credentials: %v, want an auth error", err)
	}
	wrong := &registry.AuthConfig{Username: "infera", Password: "wrong", ServerAddress: reg.Addr()}
	if err := pull(wrong); err == nil || !strings.Contains(err.Error(), "auth") {
		t.Fatalf("a pull with a wrong password: %v, want an auth error", err)
	}
	if reg.BlobGets() != 0 {
		t.Errorf("%d blobs served to unauthorized pulls", reg.BlobGets())
	}
	if err := pull(&registry.AuthConfig{Username: "infera", Password: "s3cret", ServerAddress: reg.Addr()}); err != nil {
		t.Fatalf("pull with credentials: %v", err)
	}
	if reg.BlobGets() == 0 || reg.ManifestGets() == 0 || reg.Unauthorized() == 0 {
		t.Errorf("counters: %d blob GETs, %d manifest GETs, %d refused", reg.BlobGets(), reg.ManifestGets(), reg.Unauthorized())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inspect, err := cli.ImageInspect(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if want := reg.Addr() + "/testutil/httpapp@" + digest; !slices.Contains(inspect.RepoDigests, want) {
		t.Errorf("RepoDigests %v, want %s among them", inspect.RepoDigests, want)
	}
}

func TestLoadImageAndRun(t *testing.T) {
	cli := Docker(t)
	ref := fmt.Sprintf("infera-test/testutil-httpapp:%d", os.Getpid())
	LoadImage(t, cli, ref, BuildImage(t, httpAppImage(t)))
	t.Cleanup(func() { RemoveImages(t, cli, ref) })
	label := fmt.Sprintf("org.infera.test.testutil-%d", os.Getpid())
	t.Cleanup(func() { RemoveContainersLabeled(t, cli, label) }) // before the image goes

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	inspect, err := cli.ImageInspect(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := inspect.Config; !slices.Equal(cfg.Entrypoint, []string{"/httpapp"}) || cfg.User != "65534:65534" ||
		cfg.Labels["org.infera.test"] != "testutil" || !slices.Contains(cfg.Env, "APP_VERSION=v1") {
		t.Errorf("image config %+v", cfg)
	}

	_, port, _ := net.SplitHostPort(freeLoopbackAddr(t))
	created, err := cli.ContainerCreate(ctx, client.ContainerCreateOptions{
		Image: ref,
		Config: &container.Config{
			Env:    []string{"PORT=" + port, "K_REVISION=rev-1"},
			Labels: map[string]string{label: "TestLoadImageAndRun"},
		},
		HostConfig: &container.HostConfig{NetworkMode: "host"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	base := "http://127.0.0.1:" + port
	Eventually(t, 30*time.Second, "httpapp in its container answers", func() (bool, string) {
		code, body := get(base + "/")
		if code == http.StatusOK && body == "hello from rev-1 version=v1\n" {
			return true, ""
		}
		state := "?"
		if c, err := cli.ContainerInspect(ctx, created.ID, client.ContainerInspectOptions{}); err == nil && c.Container.State != nil {
			state = string(c.Container.State.Status)
		}
		return false, fmt.Sprintf("container %s; GET / %d %q", state, code, body)
	})
	for _, tc := range []struct{ path, want string }{
		{"/id", "uid=65534 gid=65534"},
		{"/write?path=/tmp/x", "ok"},            // the layer's /tmp is 1777
		{"/write?path=/x", "permission denied"}, // and / is root's
		{"/file?path=/tmp/x", "x"},
	} {
		if _, body := get(base + tc.path); !strings.Contains(body, tc.want) {
			t.Errorf("GET %s: %q, want it to contain %q", tc.path, body, tc.want)
		}
	}
	RemoveContainersLabeled(t, cli, label)
	if _, err := cli.ContainerInspect(ctx, created.ID, client.ContainerInspectOptions{}); err == nil {
		t.Error("the container is still there after RemoveContainersLabeled")
	}
}
