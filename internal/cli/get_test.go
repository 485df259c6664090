package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/adminapi"
	"github.com/infera-dev/infera/internal/testutil"
)

// fakeAdmin is a fake admin API: GET /api/v1/services answers the lists in turn, the last one
// from then on.
func fakeAdmin(t *testing.T, lists ...[]adminapi.ServiceView) (string, *atomic.Int32) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/services" {
			http.NotFound(w, r)
			return
		}
		i := min(int(calls.Add(1))-1, len(lists)-1)
		json.NewEncoder(w).Encode(lists[i])
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), &calls
}

func TestGetOutputYAML(t *testing.T) {
	addr, _ := fakeAdmin(t, []adminapi.ServiceView{{Namespace: "default", Name: "llm", Ready: "True"}})
	var out, errOut strings.Builder
	if code := Main(context.Background(), []string{"get", "services", "-o", "yaml", "--admin", addr}, IO{Out: &out, ErrOut: &errOut}); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "name: llm") || !strings.Contains(out.String(), "namespace: default") {
		t.Errorf("yaml:\n%s", out.String())
	}
	if code := Main(context.Background(), []string{"get", "services", "-o", "xml", "--admin", addr}, IO{Out: &out, ErrOut: &errOut}); code != ExitUsage {
		t.Errorf("-o xml: exit %d, want %d", code, ExitUsage)
	}
}

// TestGetWatch: get -w prints the table, then only the rows that changed, until interrupted.
func TestGetWatch(t *testing.T) {
	defer func(d time.Duration) { watchEvery = d }(watchEvery)
	watchEvery = 10 * time.Millisecond
	a := adminapi.ServiceView{Namespace: "default", Name: "a", Ready: "Unknown"}
	b := adminapi.ServiceView{Namespace: "default", Name: "b", Ready: "True"}
	ready := a
	ready.Ready = "True"
	addr, calls := fakeAdmin(t, []adminapi.ServiceView{a, b}, []adminapi.ServiceView{a, b}, []adminapi.ServiceView{ready, b})
	ctx, cancel := context.WithCancel(context.Background())
	out := &testutil.SyncBuffer{}
	done := make(chan int)
	go func() {
		done <- Main(ctx, []string{"get", "services", "-w", "--admin", addr}, IO{Out: out, ErrOut: out})
	}()
	testutil.Eventually(t, 10*time.Second, "the change printed", func() (bool, string) {
		return calls.Load() >= 4, out.String()
	})
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "NAMESPACE") || !strings.Contains(lines[3], "a") || !strings.Contains(lines[3], "True") {
		t.Fatalf("want the header, two rows, then a's changed row only:\n%s", out)
	}
}
