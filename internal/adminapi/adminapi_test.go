package adminapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/infera-dev/infera/internal/manifest"
)

// fakeBackend is a Backend with fixed views; Apply refuses sources named "bad.yaml".
type fakeBackend struct {
	applied []manifest.Source
	dryRun  bool
}

func (f *fakeBackend) Apply(_ context.Context, sources []manifest.Source, dryRun bool) (ApplyResult, error) {
	for _, s := range sources {
		if s.Name == "bad.yaml" {
			return ApplyResult{Problems: []string{"bad.yaml:1:1: broken"}, Errors: 1}, ErrInvalid
		}
	}
	f.applied, f.dryRun = sources, dryRun
	return ApplyResult{Changes: []Change{{Kind: "Service", Group: "serving.knative.dev", Namespace: "default", Name: "llm", Action: "created"}}}, nil
}

func (f *fakeBackend) Delete(_ context.Context, sources []manifest.Source) (ApplyResult, error) {
	return ApplyResult{}, fmt.Errorf("store: disk full")
}

func (f *fakeBackend) Services() []ServiceView {
	return []ServiceView{{Namespace: "default", Name: "llm", URL: "http://llm.default.localhost", Ready: "True"}}
}

func (f *fakeBackend) Revisions() []RevisionView {
	return []RevisionView{
		{Namespace: "default", Name: "llm-00001", Service: "llm", State: StateRunning},
		{Namespace: "default", Name: "chat-00001", Service: "chat", State: StatePending},
	}
}

func (f *fakeBackend) Replicas() []Replica {
	return []Replica{
		{Name: "llm-00001-b", Revision: "default/llm-00001"},
		{Name: "llm-00001-a", Revision: "default/llm-00001"},
		{Name: "llmx-00001-a", Revision: "default/llmx-00001"},
	}
}

func (f *fakeBackend) Logs(replica string) (io.ReadCloser, error) {
	if !strings.HasPrefix(replica, "llm-00001-") {
		return nil, fmt.Errorf("unknown replica %q", replica)
	}
	return io.NopCloser(strings.NewReader("log of " + replica + "\n")), nil
}

func (f *fakeBackend) Datasets() []DatasetView {
	return []DatasetView{{Namespace: "default", Name: "oss-data", Phase: "Fetching", Bytes: 1 << 20, Total: 4 << 20, Mode: "prefetch"}}
}

func (f *fakeBackend) ImageCaches() []ImageCacheView {
	return []ImageCacheView{{Name: "ai", Phase: "Ready", Images: []ImageCacheImageView{{Image: "reg/app:v1", State: "Ready", Owned: true}}}}
}

func (f *fakeBackend) DataLoads() []DataLoadView {
	return []DataLoadView{{Namespace: "default", Name: "warm", Dataset: "default/oss-data", Policy: "Once", Phase: "Executing"}}
}

func newServer(t *testing.T) (*fakeBackend, *Client) {
	t.Helper()
	b := &fakeBackend{}
	srv := httptest.NewServer(Handler(b, nil, map[string]http.Handler{
		"GET /extra": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "mounted") }),
	}))
	t.Cleanup(srv.Close)
	return b, NewClient(srv.URL)
}

func TestClientServer(t *testing.T) {
	ctx := t.Context()
	b, c := newServer(t)

	res, err := c.Apply(ctx, []manifest.Source{{Name: "svc.yaml", Data: []byte("x")}}, true)
	if err != nil || len(res.Changes) != 1 || res.Changes[0].String() != "service.serving.knative.dev/llm created" {
		t.Fatalf("apply: %+v %v", res, err)
	}
	if !b.dryRun || len(b.applied) != 1 || string(b.applied[0].Data) != "x" {
		t.Errorf("backend got %+v dryRun %v", b.applied, b.dryRun)
	}

	_, err = c.Apply(ctx, []manifest.Source{{Name: "bad.yaml"}}, false)
	var re *ResultError
	if !errors.As(err, &re) || re.Result.Errors != 1 || re.Result.Problems[0] != "bad.yaml:1:1: broken" {
		t.Errorf("invalid apply: %v", err)
	}
	if _, err := c.Delete(ctx, nil); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("failed delete: %v", err)
	}

	d, err := c.Describe(ctx, "default", "llm")
	if err != nil || d.Service.Name != "llm" || len(d.Revisions) != 1 || len(d.Replicas) != 2 || d.Replicas[0].Name != "llm-00001-a" {
		t.Errorf("describe: %+v %v", d, err)
	}
	if _, err := c.Describe(ctx, "default", "nope"); err == nil || err.Error() != "service default/nope not found" {
		t.Errorf("describe missing: %v", err)
	}
	revs, err := c.Revisions(ctx)
	if err != nil || len(revs) != 2 || revs[1].State != StatePending {
		t.Errorf("revisions: %+v %v", revs, err)
	}

	ds, err := c.Datasets(ctx)
	if err != nil || len(ds) != 1 || ds[0].Phase != "Fetching" {
		t.Errorf("datasets: %+v %v", ds, err)
	}
	if d, err := c.Dataset(ctx, "default", "oss-data"); err != nil || d.Total != 4<<20 {
		t.Errorf("dataset: %+v %v", d, err)
	}
	if _, err := c.Dataset(ctx, "default", "nope"); err == nil || err.Error() != "dataset default/nope not found" {
		t.Errorf("missing dataset: %v", err)
	}
	if dl, err := c.DataLoads(ctx); err != nil || len(dl) != 1 || dl[0].Dataset != "default/oss-data" {
		t.Errorf("dataloads: %+v %v", dl, err)
	}
	if ics, err := c.ImageCaches(ctx); err != nil || len(ics) != 1 || ics[0].Images[0].Image != "reg/app:v1" {
		t.Errorf("imagecaches: %+v %v", ics, err)
	}
	if ic, err := c.ImageCache(ctx, "ai"); err != nil || ic.Phase != "Ready" {
		t.Errorf("imagecache: %+v %v", ic, err)
	}
	if _, err := c.ImageCache(ctx, "nope"); err == nil || err.Error() != "imagecache nope not found" {
		t.Errorf("missing imagecache: %v", err)
	}
	if cs, err := c.ColdStart(ctx, "default", "llm-00001"); err != nil || cs.State != StateRunning || len(cs.Replicas) != 2 {
		t.Errorf("coldstart: %+v %v", cs, err)
	}
	if _, err := c.ColdStart(ctx, "default", "nope-00001"); err == nil || err.Error() != "revision default/nope-00001 not found" {
		t.Errorf("coldstart of a missing revision: %v", err)
	}

	var logs strings.Builder
	if err := c.Logs(ctx, "default", "llm", "", &logs); err != nil ||
		logs.String() != "==> llm-00001-a <==\nlog of llm-00001-a\n==> llm-00001-b <==\nlog of llm-00001-b\n" {
		t.Errorf("service logs: %q %v", logs.String(), err)
	}
	logs.Reset()
	if err := c.Logs(ctx, "default", "llm", "llm-00001-b", &logs); err != nil || logs.String() != "log of llm-00001-b\n" {
		t.Errorf("replica log: %q %v", logs.String(), err)
	}
	if err := c.Logs(ctx, "default", "ghost", "", &logs); err == nil || !strings.Contains(err.Error(), "no replicas with logs") {
		t.Errorf("logs of a service without replicas: %v", err)
	}
}

func TestHandlerEdges(t *testing.T) {
	_, c := newServer(t)
	for _, tc := range []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"GET", "/healthz", "", 200, "ok\n"},
		{"GET", "/extra", "", 200, "mounted"},
		{"GET", "/nope", "", 404, `"error": "no such endpoint: GET /nope"`},
		{"GET", "/metrics", "", 404, "no such endpoint"}, // no gatherer given
		{"POST", APIPrefix + "/apply", `{"sources":[],"extra":1}`, 400, `unknown field \"extra\"`},
		{"POST", APIPrefix + "/apply", `{`, 400, "bad request body"},
	} {
		req, _ := http.NewRequest(tc.method, c.Base+tc.path, strings.NewReader(tc.body))
		resp, err := c.HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.want) {
			t.Errorf("%s %s: %d %s, want %d containing %q", tc.method, tc.path, resp.StatusCode, body, tc.code, tc.want)
		}
	}
}

func TestNotRunning(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing answers there now
	_, err = NewClient(addr).Services(t.Context())
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "http://"+addr) {
		t.Errorf("err = %v, want ErrNotRunning naming %s", err, addr)
	}
}
