package platform

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// startUp runs Up on fresh loopback listeners and an empty state directory, and waits until
// it serves.
func startUp(t *testing.T) (adminLn net.Listener, cancel func(), done <-chan error, out *strings.Builder) {
	t.Helper()
	ctx, cancelCtx := context.WithCancel(context.Background())
	ready := make(chan struct{})
	errc := make(chan error, 1)
	adminLn = listen(t)
	out = &strings.Builder{}
	cfg := UpConfig{
		StateDir: t.TempDir(), Sandbox: "none", Self: "/bin/false",
		GatewayListener: listen(t), AdminListener: adminLn, Out: out,
		Ready: func(string, string) { close(ready) },
	}
	go func() { errc <- Up(ctx, cfg) }()
	select {
	case <-ready:
	case err := <-errc:
		t.Fatalf("Up returned before serving: %v", err)
	}
	t.Cleanup(cancelCtx)
	return adminLn, cancelCtx, errc, out
}

func TestUpStopsGracefully(t *testing.T) {
	adminLn, cancel, done, out := startUp(t)
	resp, err := http.Get("http://" + adminLn.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok\n" {
		t.Fatalf("healthz: %q", body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Up after cancel: %v", err)
	}
	if !strings.Contains(out.String(), "no services yet") || !strings.Contains(out.String(), "shutting down") {
		t.Errorf("output:\n%s", out)
	}
}

// TestUpStopsWhenAComponentFails: the admin API's listener dies under it; up stops with that
// error instead of serving on without it.
func TestUpStopsWhenAComponentFails(t *testing.T) {
	adminLn, _, done, _ := startUp(t)
	adminLn.Close()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "up: admin API:") || !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Up = %v, want the admin API's failure", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Up kept running with its admin API gone")
	}
}

func TestUpListenError(t *testing.T) {
	taken := listen(t)
	defer taken.Close()
	err := Up(context.Background(), UpConfig{StateDir: t.TempDir(), Listen: taken.Addr().String(), Self: "/bin/false"})
	if err == nil || !strings.Contains(err.Error(), "gateway cannot listen on "+taken.Addr().String()) || !strings.Contains(err.Error(), "--listen") {
		t.Fatalf("Up = %v", err)
	}
}
