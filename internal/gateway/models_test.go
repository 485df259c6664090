package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/testutil"
	"github.com/infera-dev/infera/internal/workload"
)

// openAIModel is what OpenAI's clients read of a model (the Node client's models.list() types
// it as id, object, created, owned_by and iterates data[]).
type openAIModel struct {
	ID      *string `json:"id"`
	Object  string  `json:"object"`
	Created *int64  `json:"created"`
	OwnedBy *string `json:"owned_by"`
}

// TestModelList: the gateway's own GET /v1/models lists every model it routes, on a Host no
// route has, from the table alone: a revision at zero is listed and not woken, and no replica
// sees a request. A service or tag host is routed to its replica as before.
func TestModelList(t *testing.T) {
	var demands atomic.Int32
	start := time.Unix(1767225600, 0)
	clk := testutil.NewFakeClock(start)
	rg := newRig(t, Config{Clock: clk, OnDemand: func(workload.RevisionID) { demands.Add(1) }})

	var hits atomic.Int32 // requests that reached the replica
	alpha := workload.NewRevisionID("default", "alpha-00001")
	rg.g.SetRevision(workload.Revision{ID: alpha, Namespace: "default", Service: "alpha", Name: "alpha-00001"})
	rg.g.SetEndpoints(alpha, []workload.Endpoint{backend(t, "a1", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, `{"object":"list","data":[{"id":"from-the-replica","object":"model","created":1,"owned_by":"infera"}]}`)
	})})
	beta := workload.NewRevisionID("team", "beta-00001") // scaled to zero: no endpoints
	rg.g.SetRevision(workload.Revision{ID: beta, Namespace: "team", Service: "beta", Name: "beta-00001"})
	rg.g.SetRoutes([]workload.Route{
		{Namespace: "default", Service: "alpha", Host: "alpha.default.localhost",
			Targets: []workload.Target{{Revision: alpha, Percent: 100, Tag: "v1"}}, Models: []string{"alpha", "llama-3"}},
		{Namespace: "team", Service: "beta", Host: "beta.team.localhost",
			Targets: []workload.Target{{Revision: beta, Percent: 100, Tag: "current"}}, Models: []string{"beta", "gpt-4o", "org/m"}},
		{Namespace: "default", Service: "gamma", Host: "gamma.default.localhost", Models: []string{"gamma"}}, // no revision yet
		{Namespace: "default", Service: "delta", Host: "delta.default.localhost",
			Targets: []workload.Target{{Revision: alpha, Percent: 100}}, Models: []string{"delta", "llama-3"}}, // llama-3 stays alpha's
	})
	created := start.Unix()
	all := []string{"alpha", "beta", "delta", "gpt-4o", "llama-3", "org/m"}
	owner := map[string]string{"alpha": "default", "beta": "team", "delta": "default", "gpt-4o": "team", "llama-3": "default", "org/m": "team"}

	tests := []struct {
		name         string
		method, host string
		path         string
		code         int
		list         []string // ids of the list; nil: not a list
		model        string   // id of the one model; "" if none
		wantErrCode  string   // the OpenAI error's code, or type when it has none
		fromReplica  bool     // the replica answered
		wantNoBodyOK bool     // HEAD: no body
	}{
		{"gateway address", "GET", "127.0.0.1", "/v1/models", 200, all, "", "", false, false},
		{"localhost with a port", "GET", "localhost:8080", "/v1/models", 200, all, "", "", false, false},
		{"a host no route has", "GET", "nope.default.localhost", "/v1/models", 200, all, "", "", false, false},
		{"trailing slash", "GET", "127.0.0.1", "/v1/models/", 200, all, "", "", false, false},
		{"query ignored", "GET", "127.0.0.1", "/v1/models?limit=1", 200, all, "", "", false, false},
		{"HEAD", "HEAD", "127.0.0.1", "/v1/models", 200, nil, "", "", false, true},
		{"one model at zero", "GET", "127.0.0.1", "/v1/models/gpt-4o", 200, nil, "gpt-4o", "", false, false},
		{"one model, a slash in its id", "GET", "127.0.0.1", "/v1/models/org/m", 200, nil, "org/m", "", false, false},
		{"an alias two routes list: the first's", "GET", "127.0.0.1", "/v1/models/llama-3", 200, nil, "llama-3", "", false, false},
		{"unknown model", "GET", "127.0.0.1", "/v1/models/gpt-9", 404, nil, "", "model_not_found", false, false},
		{"a route with no revision", "GET", "127.0.0.1", "/v1/models/gamma", 404, nil, "", "model_not_found", false, false},
		{"service host: its replica's list", "GET", "alpha.default.localhost", "/v1/models", 200, nil, "", "", true, false},
		{"tag host: the tagged revision's list", "GET", "v1-alpha.default.localhost", "/v1/models", 200, nil, "", "", true, false},
		{"not GET", "POST", "127.0.0.1", "/v1/models", 404, nil, "", "not_found", false, false},
		{"another path", "GET", "127.0.0.1", "/v1/modelsx", 404, nil, "", "not_found", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			res := rg.do(rg.newRequest(context.Background(), tc.method, tc.host, tc.path, ""))
			if res.err != nil || res.code != tc.code {
				t.Fatalf("%s %s %s: %d %v %q, want %d", tc.method, tc.host, tc.path, res.code, res.err, res.body, tc.code)
			}
			if got := hits.Load() - before; (got == 1) != tc.fromReplica || got > 1 {
				t.Fatalf("%d requests reached the replica; from the replica: %v", got, tc.fromReplica)
			}
			switch {
			case tc.fromReplica:
				mustContain(t, res.body, "from-the-replica")
			case tc.wantNoBodyOK:
				if res.body != "" || res.header.Get("Content-Type") != "application/json" {
					t.Errorf("HEAD: body %q, Content-Type %q", res.body, res.header.Get("Content-Type"))
				}
			case tc.list != nil:
				var list struct {
					Object string        `json:"object"`
					Data   []openAIModel `json:"data"`
				}
				if err := json.Unmarshal([]byte(res.body), &list); err != nil || list.Object != "list" {
					t.Fatalf("list %q: %v", res.body, err)
				}
				var ids []string
				for _, m := range list.Data {
					if m.ID == nil || m.Object != "model" || m.Created == nil || *m.Created != created || m.OwnedBy == nil || *m.OwnedBy != owner[*m.ID] {
						t.Errorf("model %s", res.body)
						continue
					}
					ids = append(ids, *m.ID)
				}
				if !slices.Equal(ids, tc.list) {
					t.Errorf("ids %q, want %q", ids, tc.list)
				}
			case tc.model != "":
				var m openAIModel
				if err := json.Unmarshal([]byte(res.body), &m); err != nil || m.ID == nil || *m.ID != tc.model || m.Object != "model" ||
					*m.OwnedBy != owner[tc.model] || *m.Created != created {
					t.Errorf("model %q: %v", res.body, err)
				}
			default:
				var e struct {
					Error struct {
						Message string  `json:"message"`
						Type    string  `json:"type"`
						Param   *string `json:"param"`
						Code    *string `json:"code"`
					} `json:"error"`
				}
				if err := json.Unmarshal([]byte(res.body), &e); err != nil || e.Error.Message == "" {
					t.Fatalf("error body %q: %v", res.body, err)
				}
				got := e.Error.Type
				if e.Error.Code != nil {
					got = *e.Error.Code
					if e.Error.Type != "invalid_request_error" || e.Error.Param == nil || *e.Error.Param != "model" {
						t.Errorf("model_not_found body %q", res.body)
					}
				}
				if got != tc.wantErrCode {
					t.Errorf("error %q, want %q", res.body, tc.wantErrCode)
				}
			}
		})
	}
	if n := demands.Load(); n != 0 {
		t.Errorf("OnDemand called %d times: listing models woke a revision", n)
	}
	if n := rg.g.Queued(beta); n != 0 {
		t.Errorf("%d requests held for the revision at zero", n)
	}
	if res := rg.get("127.0.0.1", "/v1/models/gpt-9"); res.body != "{\"error\":{\"message\":\"The model `gpt-9` does not exist.\",\"type\":\"invalid_request_error\",\"param\":\"model\",\"code\":\"model_not_found\"}}\n" {
		t.Errorf("unknown model body %q", res.body)
	}
}

func TestModelListEmpty(t *testing.T) {
	rg := newRig(t, Config{})
	if res := rg.get("127.0.0.1", "/v1/models"); res.code != 200 || res.body != `{"object":"list","data":[]}`+"\n" {
		t.Errorf("no routes: %d %q", res.code, res.body)
	}
}

// TestModelListCreated: a model keeps the time it was first routed while it stays routed to
// the same service; a new one, or one moved to another service, gets the time of the change.
func TestModelListCreated(t *testing.T) {
	route := func(ns, svc string, models ...string) workload.Route {
		return workload.Route{Namespace: ns, Service: svc, Models: models,
			Targets: []workload.Target{{Revision: workload.NewRevisionID(ns, svc+"-00001"), Percent: 100}}}
	}
	type entry struct {
		id, owner string
		created   int64
	}
	steps := []struct {
		name   string
		now    int64
		routes []workload.Route
		want   []entry
	}{
		{"first", 100, []workload.Route{route("default", "llm", "llm", "gpt-4o")},
			[]entry{{"gpt-4o", "default", 100}, {"llm", "default", 100}}},
		{"unchanged", 200, []workload.Route{route("default", "llm", "llm", "gpt-4o")},
			[]entry{{"gpt-4o", "default", 100}, {"llm", "default", 100}}},
		{"a new service and alias", 300, []workload.Route{route("default", "llm", "llm", "gpt-4o"), route("team", "chat", "chat", "b")},
			[]entry{{"b", "team", 300}, {"chat", "team", 300}, {"gpt-4o", "default", 100}, {"llm", "default", 100}}},
		{"an alias moves", 400, []workload.Route{route("default", "llm", "llm"), route("team", "chat", "chat", "b", "gpt-4o")},
			[]entry{{"b", "team", 300}, {"chat", "team", 300}, {"gpt-4o", "team", 400}, {"llm", "default", 100}}},
		{"a route with no revision", 500, []workload.Route{{Namespace: "default", Service: "llm", Models: []string{"llm"}}, route("team", "chat", "chat")},
			[]entry{{"chat", "team", 300}}},
		{"back again", 600, []workload.Route{route("default", "llm", "llm"), route("team", "chat", "chat")},
			[]entry{{"chat", "team", 300}, {"llm", "default", 600}}},
	}
	var prev []listedModel
	for _, st := range steps {
		prev = modelList(st.routes, prev, st.now)
		var got []entry
		for _, m := range prev {
			got = append(got, entry{m.ID, m.OwnedBy, m.Created})
		}
		if !slices.Equal(got, st.want) {
			t.Errorf("%s: %v, want %v", st.name, got, st.want)
		}
	}
}
