package gateway

import (
	"cmp"
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/infera-dev/infera/internal/workload"
)

// The gateway's own OpenAI model list. GET /v1/models on a Host that is no route's (the
// gateway's address, localhost, anything but a service or tag host) lists every model the
// gateway routes by a request's "model": each route's Models, the service's name and its
// infera.dev/models aliases, whether its revisions have replicas or are scaled to zero. It is
// answered from the routing table alone: no request reaches a replica and nothing is woken
// (Config.OnDemand is not called). GET /v1/models/{id} is one of them, or OpenAI's 404
// model_not_found. On a service host the request is routed like any other, so the model
// server behind it answers with its own list; on a tag host likewise, to the tagged revision,
// which is waked if it is at zero, as any request to that host would.
//
// The list is OpenAI's shape, what its clients (the Node client's models.list() reads data[]
// and each id) and llama-swap's and Ollama's users expect:
//
//	{"object":"list","data":[{"id":"llm","object":"model","created":1767225600,"owned_by":"default"}]}
//
// sorted by id; owned_by is the route's namespace, and created the time (Config.Clock, Unix
// seconds) this gateway first routed the model to that service, kept while it stays routed.

// unknownModel is the error for GET /v1/models/{id} of an id no route has: ErrModelNotFound,
// with OpenAI's message.
type unknownModel struct{ id string }

func (e unknownModel) Error() string { return "The model `" + e.id + "` does not exist." }
func (e unknownModel) Unwrap() error { return ErrModelNotFound }

// listedModel is one model the gateway routes by name, as GET /v1/models lists it.
type listedModel struct {
	ID        string `json:"id"`
	Object    string `json:"object"` // "model"
	Created   int64  `json:"created"`
	OwnedBy   string `json:"owned_by"`
	service   string
	namespace string
}

// modelList computes the list for a new routing table: the models of routes with a revision
// to send to (those requests by "model" can reach), a model listed by several routes going to
// the first, as routing does. A model routed to the same service as in prev keeps its created
// time; a new one gets now.
func modelList(routes []workload.Route, prev []listedModel, now int64) []listedModel {
	var out []listedModel
	seen := map[string]bool{}
	for _, rt := range routes {
		if len(newSplit(rt.Targets).cycle) == 0 {
			for _, m := range rt.Models {
				seen[m] = true // routing keeps the first route listing it, unreachable or not
			}
			continue
		}
		for _, m := range rt.Models {
			if seen[m] {
				continue
			}
			seen[m] = true
			lm := listedModel{ID: m, Object: "model", Created: now, OwnedBy: rt.Namespace, service: rt.Service, namespace: rt.Namespace}
			if i, ok := slices.BinarySearchFunc(prev, m, func(p listedModel, id string) int { return cmp.Compare(p.ID, id) }); ok &&
				prev[i].service == lm.service && prev[i].namespace == lm.namespace {
				lm.Created = prev[i].Created
			}
			out = append(out, lm)
		}
	}
	slices.SortFunc(out, func(a, b listedModel) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// serveModels answers GET (or HEAD) /v1/models and /v1/models/{id} from the routing table when
// the request's Host is no route's, and says whether it did.
func (g *Gateway) serveModels(c *call) bool {
	r := c.r
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/models")
	if !ok || (rest != "" && rest[0] != '/') {
		return false
	}
	t := g.routes.Load()
	if _, routed := t.hosts[hostOnly(r.Host)]; routed {
		return false
	}
	var body any
	if id := strings.TrimPrefix(rest, "/"); id == "" {
		data := t.list
		if data == nil {
			data = []listedModel{} // [], never null: clients range over it
		}
		body = struct {
			Object string        `json:"object"`
			Data   []listedModel `json:"data"`
		}{"list", data}
	} else {
		i, found := slices.BinarySearchFunc(t.list, id, func(m listedModel, id string) int { return cmp.Compare(m.ID, id) })
		if !found {
			c.fail(unknownModel{id})
			return true
		}
		body = t.list[i]
	}
	b, _ := json.Marshal(body) // of strings and numbers: cannot fail
	b = append(b, '\n')
	h := c.w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	c.w.WriteHeader(http.StatusOK)
	n, _ := c.w.Write(b)
	c.code, c.size = http.StatusOK, int64(n)
	return true
}
