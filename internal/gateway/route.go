package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/infera-dev/infera/internal/workload"
)

// table is an immutable routing table; SetRoutes swaps in a new one.
type table struct {
	hosts  map[string]*split // service host and tag hosts
	models map[string]*split
	list   []listedModel // GET /v1/models (models.go), by id
}

// split picks a revision for each request in the route's proportions by smooth weighted round
// robin over a precomputed cycle, so a 70/30 split is exact over every 10 requests.
type split struct {
	cycle []workload.RevisionID
	next  atomic.Uint64
}

func (s *split) pick() (workload.RevisionID, bool) {
	if len(s.cycle) == 0 {
		return "", false
	}
	if len(s.cycle) == 1 {
		return s.cycle[0], true
	}
	return s.cycle[(s.next.Add(1)-1)%uint64(len(s.cycle))], true
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// newSplit lays out a cycle of the targets with positive Percent, interleaved (nginx's smooth
// weighted round robin), of length sum(percent)/gcd.
func newSplit(targets []workload.Target) *split {
	var ids []workload.RevisionID
	var weights []int
	idx := map[workload.RevisionID]int{}
	for _, t := range targets {
		if t.Percent <= 0 || t.Revision == "" {
			continue
		}
		if i, ok := idx[t.Revision]; ok { // Knative allows the same revision twice: shares add up
			weights[i] += t.Percent
			continue
		}
		idx[t.Revision] = len(ids)
		ids = append(ids, t.Revision)
		weights = append(weights, t.Percent)
	}
	d, total := 0, 0
	for _, w := range weights {
		d = gcd(d, w)
		total += w
	}
	s := &split{}
	if total == 0 {
		return s
	}
	n := total / d
	current := make([]int, len(ids))
	for range n {
		best := 0
		for i, w := range weights {
			current[i] += w / d
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= n
		s.cycle = append(s.cycle, ids[best])
	}
	return s
}

// SetRoutes replaces the whole routing table at once.
func (g *Gateway) SetRoutes(routes []workload.Route) {
	t := &table{hosts: map[string]*split{}, models: map[string]*split{}}
	for _, rt := range routes {
		s := newSplit(rt.Targets)
		if rt.Host != "" {
			t.hosts[strings.ToLower(rt.Host)] = s
		}
		for _, m := range rt.Models {
			if _, dup := t.models[m]; !dup { // first route listing a model keeps it
				t.models[m] = s
			}
		}
		for _, tg := range rt.Targets {
			if tg.Tag == "" || tg.Revision == "" {
				continue
			}
			t.hosts[strings.ToLower(tagHost(tg.Tag, rt))] = &split{cycle: []workload.RevisionID{tg.Revision}}
		}
	}
	t.list = modelList(routes, g.routes.Load().list, g.clock.Now().Unix())
	g.routes.Store(t)
}

// tagHost is {tag}-{service}.{namespace}.{domain} for a route whose host is
// {service}.{namespace}.{domain}.
func tagHost(tag string, rt workload.Route) string {
	prefix := rt.Service + "." + rt.Namespace + "."
	if domain, ok := strings.CutPrefix(rt.Host, prefix); ok {
		return workload.TagHost(tag, rt.Service, rt.Namespace, domain)
	}
	return tag + "-" + rt.Host
}

func hostOnly(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return strings.ToLower(strings.TrimSuffix(h, "."))
}

// resolve picks the revision for a request: by Host (service or tag host) first, then for
// POST /v1/... by the JSON body's "model" field. The body it peeks at is put back in front of
// the rest, so the replica reads it unchanged.
func (g *Gateway) resolve(r *http.Request) (workload.RevisionID, error) {
	t := g.routes.Load()
	if s := t.hosts[hostOnly(r.Host)]; s != nil {
		if id, ok := s.pick(); ok {
			return id, nil
		}
		return "", ErrNoRoute
	}
	if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/v1/") || len(t.models) == 0 || r.Body == nil {
		return "", ErrNoRoute
	}
	model, err := peekModel(r)
	if err != nil {
		return "", err
	}
	if s := t.models[model]; s != nil && model != "" {
		if id, ok := s.pick(); ok {
			return id, nil
		}
	}
	return "", ErrNoRoute
}

// peekModel reads up to ModelPeekBytes of the body, finds the top-level "model" string and
// replays what it read ahead of the rest of the body.
func peekModel(r *http.Request) (string, error) {
	limit := int64(ModelPeekBytes)
	if r.ContentLength >= 0 && r.ContentLength < limit {
		limit = r.ContentLength
	}
	buf := make([]byte, limit)
	n, err := io.ReadFull(r.Body, buf)
	buf = buf[:n]
	switch err {
	case nil:
	case io.EOF, io.ErrUnexpectedEOF:
		err = nil
	default:
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return "", ErrBodyTooLarge
		}
		return "", err
	}
	r.Body = &replayBody{head: bytes.NewReader(buf), rest: r.Body}
	return modelField(buf), nil
}

// modelField scans the top-level object of a possibly truncated JSON document for "model".
func modelField(b []byte) string {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return ""
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		key, _ := tok.(string)
		if key == "model" {
			v, err := dec.Token()
			if s, ok := v.(string); ok && err == nil {
				return s
			}
			return ""
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return ""
		}
	}
	return ""
}

// replayBody is the peeked bytes followed by the unread rest of the original body.
type replayBody struct {
	head *bytes.Reader
	rest io.ReadCloser
}

func (b *replayBody) Read(p []byte) (int, error) {
	if b.head.Len() > 0 {
		return b.head.Read(p)
	}
	return b.rest.Read(p)
}

func (b *replayBody) Close() error { return b.rest.Close() }
