package platform

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"knative.dev/pkg/apis"

	"github.com/infera-dev/infera/internal/manifest"
	"github.com/infera-dev/infera/internal/workload"
)

// APIPrefix is the admin API's root; the CLI talks to it.
const APIPrefix = "/api/v1"

// ApplyRequest is the body of POST /api/v1/apply and /api/v1/delete.
type ApplyRequest struct {
	Sources []manifest.Source `json:"sources"`
	DryRun  bool              `json:"dryRun,omitempty"`
}

// APIError is every error body of the admin API.
type APIError struct {
	Error  string       `json:"error"`
	Result *ApplyResult `json:"result,omitempty"`
}

// maxApplyBody bounds an apply request: manifests are small (manifest.MaxSourceBytes each).
const maxApplyBody = 4 * manifest.MaxSourceBytes

// AdminHandler serves /healthz, /metrics and the /api/v1 JSON API. Secrets are never returned:
// the API shows services, revisions, replicas and logs only.
func (c *Controller) AdminHandler(gatherer prometheus.Gatherer, extra map[string]http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	if gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("POST "+APIPrefix+"/apply", c.handleApply(false))
	mux.HandleFunc("POST "+APIPrefix+"/delete", c.handleApply(true))
	mux.HandleFunc("GET "+APIPrefix+"/services", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, c.Services())
	})
	mux.HandleFunc("GET "+APIPrefix+"/services/{namespace}/{name}", func(w http.ResponseWriter, r *http.Request) {
		d, ok := c.Describe(r.PathValue("namespace"), r.PathValue("name"))
		if !ok {
			writeJSON(w, http.StatusNotFound, APIError{Error: fmt.Sprintf("service %s/%s not found", r.PathValue("namespace"), r.PathValue("name"))})
			return
		}
		writeJSON(w, http.StatusOK, d)
	})
	mux.HandleFunc("GET "+APIPrefix+"/revisions", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, c.Revisions())
	})
	mux.HandleFunc("GET "+APIPrefix+"/replicas", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, c.sup.Replicas())
	})
	mux.HandleFunc("GET "+APIPrefix+"/replicas/{name}/logs", func(w http.ResponseWriter, r *http.Request) {
		c.writeLogs(w, []string{r.PathValue("name")}, false)
	})
	mux.HandleFunc("GET "+APIPrefix+"/services/{namespace}/{name}/logs", func(w http.ResponseWriter, r *http.Request) {
		prefix := r.PathValue("namespace") + "/" + r.PathValue("name") + "-"
		var names []string
		for _, rep := range c.sup.Replicas() {
			if strings.HasPrefix(rep.Revision, prefix) {
				names = append(names, rep.Name)
			}
		}
		if len(names) == 0 {
			writeJSON(w, http.StatusNotFound, APIError{Error: fmt.Sprintf("service %s/%s has no replicas with logs", r.PathValue("namespace"), r.PathValue("name"))})
			return
		}
		c.writeLogs(w, names, len(names) > 1)
	})
	for p, h := range extra {
		mux.Handle(p, h)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, APIError{Error: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
	return mux
}

func (c *Controller) handleApply(remove bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req ApplyRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxApplyBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, APIError{Error: "bad request body: " + err.Error()})
			return
		}
		var res ApplyResult
		var err error
		if remove {
			res, err = c.remove(r.Context(), req.Sources)
		} else {
			res, err = c.apply(r.Context(), req.Sources, req.DryRun)
		}
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

func (c *Controller) writeLogs(w http.ResponseWriter, names []string, prefix bool) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	wrote := false
	for _, n := range names {
		rc, err := c.sup.Logs(n)
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

// Services lists every service with its status, by namespace and name.
func (c *Controller) Services() []ServiceView {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]ServiceView, 0, len(c.view.services))
	for _, s := range c.view.services {
		out = append(out, serviceView(s, c.view.routes))
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Namespace+"/"+out[i].Name < out[j].Namespace+"/"+out[j].Name
	})
	return out
}

// Revisions lists every revision with replicas and the scaler's last decision.
func (c *Controller) Revisions() []RevisionView {
	c.mu.RLock()
	defer c.mu.RUnlock()
	routed := map[workload.RevisionID]bool{}
	for _, r := range c.view.routes {
		for _, t := range r.Targets {
			routed[t.Revision] = true
		}
	}
	out := make([]RevisionView, 0, len(c.view.revisions))
	for _, r := range c.view.revisions {
		id := workload.NewRevisionID(r.Namespace, r.Name)
		st := c.sup.Status(id)
		v := RevisionView{
			Namespace: r.Namespace, Name: r.Name, Service: r.Labels["serving.knative.dev/service"],
			Generation: r.Labels["serving.knative.dev/configurationGeneration"], Routed: routed[id],
			ReadyReplicas: st.Ready, RunningReplicas: st.Running, Conditions: conditions(r.Status.Conditions),
			ContainerConcurrency: r.Spec.GetContainerConcurrency(),
		}
		if len(r.Spec.Containers) > 0 {
			v.Image = r.Spec.Containers[0].Image
		}
		v.Ready, v.Reason, v.Message = readyOf(r.Status.GetCondition(apis.ConditionReady))
		if d, ok := c.view.decisions[id]; ok {
			v.Decision = &d
		}
		out = append(out, v)
	}
	return out
}

// Describe is one service with its revisions and replicas.
func (c *Controller) Describe(namespace, name string) (ServiceDetail, bool) {
	var d ServiceDetail
	found := false
	for _, s := range c.Services() {
		if s.Namespace == namespace && s.Name == name {
			d.Service, found = s, true
		}
	}
	if !found {
		return d, false
	}
	for _, r := range c.Revisions() {
		if r.Namespace == namespace && r.Service == name {
			d.Revisions = append(d.Revisions, r)
		}
	}
	prefix := namespace + "/" + name + "-"
	for _, rep := range c.sup.Replicas() {
		if strings.HasPrefix(rep.Revision, prefix) {
			d.Replicas = append(d.Replicas, rep)
		}
	}
	return d, true
}
