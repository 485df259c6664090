// Package adminapi is infera up's admin API: the HTTP server (/healthz, /metrics, /api/v1 JSON),
// its client (used by the CLI) and the view types both sides share. The server reads everything
// through Backend, a small interface the controller satisfies, so the dashboard and the CLI
// build on these views without importing the controller. Secrets are never returned: the API
// shows services, revisions, replicas and logs only.
package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/infera-dev/infera/internal/manifest"
)

// APIPrefix is the admin API's root; the CLI talks to it.
const APIPrefix = "/api/v1"

// ErrInvalid is returned (wrapped) by Backend.Apply and Delete when manifests do not validate;
// nothing was applied. The server answers 422 for it.
var ErrInvalid = errors.New("invalid manifests: nothing applied")

// Backend is what the admin API serves: the controller's views and its apply transactions.
type Backend interface {
	// Apply validates sources against what is applied and stores them all, or nothing.
	Apply(ctx context.Context, sources []manifest.Source, dryRun bool) (ApplyResult, error)
	// Delete removes the objects the sources name.
	Delete(ctx context.Context, sources []manifest.Source) (ApplyResult, error)
	Services() []ServiceView   // by namespace and name
	Revisions() []RevisionView // by namespace, service and generation
	Replicas() []Replica
	Logs(replica string) (io.ReadCloser, error)
	Datasets() []DatasetView       // by namespace and name
	DataLoads() []DataLoadView     // by namespace and name
	ImageCaches() []ImageCacheView // by name
}

// maxApplyBody bounds an apply request: manifests are small (manifest.MaxSourceBytes each).
const maxApplyBody = 4 * manifest.MaxSourceBytes

// Handler serves /healthz, /metrics (from gatherer, when not nil) and the /api/v1 JSON API
// over b. extra mounts more handlers by pattern (the dashboard).
func Handler(b Backend, gatherer prometheus.Gatherer, extra map[string]http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	if gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("POST "+APIPrefix+"/apply", handleApply(b.Apply))
	mux.HandleFunc("POST "+APIPrefix+"/delete", handleApply(func(ctx context.Context, s []manifest.Source, _ bool) (ApplyResult, error) {
		return b.Delete(ctx, s)
	}))
	mux.HandleFunc("GET "+APIPrefix+"/services", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, b.Services())
	})
	mux.HandleFunc("GET "+APIPrefix+"/services/{namespace}/{name}", func(w http.ResponseWriter, r *http.Request) {
		d, ok := Describe(b, r.PathValue("namespace"), r.PathValue("name"))
		if !ok {
			writeJSON(w, http.StatusNotFound, APIError{Error: fmt.Sprintf("service %s/%s not found", r.PathValue("namespace"), r.PathValue("name"))})
			return
		}
		writeJSON(w, http.StatusOK, d)
	})
	mux.HandleFunc("GET "+APIPrefix+"/revisions", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, b.Revisions())
	})
	mux.HandleFunc("GET "+APIPrefix+"/revisions/{namespace}/{name}/coldstart", func(w http.ResponseWriter, r *http.Request) {
		ns, name := r.PathValue("namespace"), r.PathValue("name")
		for _, rv := range b.Revisions() {
			if rv.Namespace == ns && rv.Name == name {
				cs := ColdStartStatus{Revision: ns + "/" + name, State: rv.State, Reason: rv.Reason, Message: rv.Message, Last: rv.LastColdStart}
				for _, rep := range b.Replicas() {
					if rep.Revision == cs.Revision {
						cs.Replicas = append(cs.Replicas, ColdStartReplica{Name: rep.Name, State: rep.State, Progress: rep.Progress, Message: rep.Message, Reason: rep.Reason})
					}
				}
				writeJSON(w, http.StatusOK, cs)
				return
			}
		}
		writeJSON(w, http.StatusNotFound, APIError{Error: fmt.Sprintf("revision %s/%s not found", ns, name)})
	})
	mux.HandleFunc("GET "+APIPrefix+"/replicas", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, b.Replicas())
	})
	mux.HandleFunc("GET "+APIPrefix+"/datasets", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, b.Datasets())
	})
	mux.HandleFunc("GET "+APIPrefix+"/datasets/{namespace}/{name}", func(w http.ResponseWriter, r *http.Request) {
		for _, d := range b.Datasets() {
			if d.Namespace == r.PathValue("namespace") && d.Name == r.PathValue("name") {
				writeJSON(w, http.StatusOK, d)
				return
			}
		}
		writeJSON(w, http.StatusNotFound, APIError{Error: fmt.Sprintf("dataset %s/%s not found", r.PathValue("namespace"), r.PathValue("name"))})
	})
	mux.HandleFunc("GET "+APIPrefix+"/dataloads", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, b.DataLoads())
	})
	mux.HandleFunc("GET "+APIPrefix+"/imagecaches", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, b.ImageCaches())
	})
	mux.HandleFunc("GET "+APIPrefix+"/imagecaches/{name}", func(w http.ResponseWriter, r *http.Request) {
		for _, c := range b.ImageCaches() {
			if c.Name == r.PathValue("name") {
				writeJSON(w, http.StatusOK, c)
				return
			}
		}
		writeJSON(w, http.StatusNotFound, APIError{Error: fmt.Sprintf("imagecache %s not found", r.PathValue("name"))})
	})
	mux.HandleFunc("GET "+APIPrefix+"/replicas/{name}/logs", func(w http.ResponseWriter, r *http.Request) {
		writeLogs(w, b, []string{r.PathValue("name")}, false)
	})
	mux.HandleFunc("GET "+APIPrefix+"/services/{namespace}/{name}/logs", func(w http.ResponseWriter, r *http.Request) {
		var names []string
		for _, rep := range serviceReplicas(b.Replicas(), r.PathValue("namespace"), r.PathValue("name")) {
			names = append(names, rep.Name)
		}
		if len(names) == 0 {
			writeJSON(w, http.StatusNotFound, APIError{Error: fmt.Sprintf("service %s/%s has no replicas with logs", r.PathValue("namespace"), r.PathValue("name"))})
			return
		}
		writeLogs(w, b, names, len(names) > 1)
	})
	for p, h := range extra {
		mux.Handle(p, h)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, APIError{Error: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
	return mux
}

// Describe is one service with its revisions and replicas, from b's views.
func Describe(b Backend, namespace, name string) (ServiceDetail, bool) {
	var d ServiceDetail
	found := false
	for _, s := range b.Services() {
		if s.Namespace == namespace && s.Name == name {
			d.Service, found = s, true
		}
	}
	if !found {
		return d, false
	}
	for _, r := range b.Revisions() {
		if r.Namespace == namespace && r.Service == name {
			d.Revisions = append(d.Revisions, r)
		}
	}
	d.Replicas = serviceReplicas(b.Replicas(), namespace, name)
	return d, true
}

// serviceReplicas are the replicas of the service's revisions ({service}-... in its namespace).
func serviceReplicas(all []Replica, namespace, service string) []Replica {
	prefix := namespace + "/" + service + "-"
	var out []Replica
	for _, rep := range all {
		if strings.HasPrefix(rep.Revision, prefix) {
			out = append(out, rep)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func handleApply(do func(context.Context, []manifest.Source, bool) (ApplyResult, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req ApplyRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxApplyBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, APIError{Error: "bad request body: " + err.Error()})
			return
		}
		res, err := do(r.Context(), req.Sources, req.DryRun)
		switch {
		case errors.Is(err, ErrInvalid):
			writeJSON(w, http.StatusUnprocessableEntity, APIError{Error: err.Error(), Result: &res})
		case err != nil:
			writeJSON(w, http.StatusInternalServerError, APIError{Error: err.Error(), Result: &res})
		default:
			writeJSON(w, http.StatusOK, res)
		}
	}
}

func writeLogs(w http.ResponseWriter, b Backend, names []string, prefix bool) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	wrote := false
	for _, n := range names {
		rc, err := b.Logs(n)
		if err != nil {
			if !wrote {
				writeJSON(w, http.StatusNotFound, APIError{Error: err.Error()})
				return
			}
			continue
		}
		wrote = true
		if prefix {
			fmt.Fprintf(w, "==> %s <==\n", n)
		}
		io.Copy(w, rc)
		rc.Close()
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// WriteJSON writes v as the API writes its answers (indented JSON), for handlers mounted
// beside it.
func WriteJSON(w http.ResponseWriter, code int, v any) { writeJSON(w, code, v) }
