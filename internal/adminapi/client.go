package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/infera-dev/infera/internal/manifest"
)

// Client talks to a running `infera up` through its admin API.
type Client struct {
	Base  string // e.g. "http://127.0.0.1:8081"
	HTTP  *http.Client
	Token string // sent as "Authorization: Bearer <token>" when set
}

// NewClient returns a client for the admin address (host:port or URL).
func NewClient(admin string) *Client {
	base := admin
	if u, err := url.Parse(admin); err != nil || u.Scheme == "" || u.Host == "" {
		base = "http://" + admin
	}
	return &Client{Base: base, HTTP: &http.Client{Timeout: 60 * time.Second}}
}

// ErrNotRunning is returned when nothing answers at the admin address.
var ErrNotRunning = errors.New("no infera up is answering")

// ResultError is an admin API error that carries an apply result (problems).
type ResultError struct {
	Msg    string
	Result ApplyResult
}

func (e *ResultError) Error() string { return e.Msg }

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w at %s (start one with `infera up`, or point --admin at it)", ErrNotRunning, c.Base)
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		var e APIError
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Error == "" {
			return fmt.Errorf("%s %s: %s", method, path, resp.Status)
		}
		if e.Result != nil {
			return &ResultError{Msg: e.Error, Result: *e.Result}
		}
		if resp.StatusCode == http.StatusUnauthorized {
			return fmt.Errorf("%w (%s)", ErrUnauthorized, e.Error)
		}
		return errors.New(e.Error)
	}
	if w, ok := out.(io.Writer); ok {
		_, err = io.Copy(w, resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Apply validates and applies sources as one all-or-nothing set.
func (c *Client) Apply(ctx context.Context, sources []manifest.Source, dryRun bool) (ApplyResult, error) {
	var res ApplyResult
	err := c.do(ctx, http.MethodPost, APIPrefix+"/apply", ApplyRequest{Sources: sources, DryRun: dryRun}, &res)
	return res, err
}

// Delete removes the objects the sources name.
func (c *Client) Delete(ctx context.Context, sources []manifest.Source) (ApplyResult, error) {
	var res ApplyResult
	err := c.do(ctx, http.MethodPost, APIPrefix+"/delete", ApplyRequest{Sources: sources}, &res)
	return res, err
}

// Services lists services.
func (c *Client) Services(ctx context.Context) ([]ServiceView, error) {
	var out []ServiceView
	return out, c.do(ctx, http.MethodGet, APIPrefix+"/services", nil, &out)
}

// Revisions lists revisions.
func (c *Client) Revisions(ctx context.Context) ([]RevisionView, error) {
	var out []RevisionView
	return out, c.do(ctx, http.MethodGet, APIPrefix+"/revisions", nil, &out)
}

// Replicas lists replica processes.
func (c *Client) Replicas(ctx context.Context) ([]Replica, error) {
	var out []Replica
	return out, c.do(ctx, http.MethodGet, APIPrefix+"/replicas", nil, &out)
}

// Datasets lists the model cache's datasets.
func (c *Client) Datasets(ctx context.Context) ([]DatasetView, error) {
	var out []DatasetView
	return out, c.do(ctx, http.MethodGet, APIPrefix+"/datasets", nil, &out)
}

// Dataset shows one dataset.
func (c *Client) Dataset(ctx context.Context, namespace, name string) (DatasetView, error) {
	var out DatasetView
	return out, c.do(ctx, http.MethodGet, APIPrefix+"/datasets/"+url.PathEscape(namespace)+"/"+url.PathEscape(name), nil, &out)
}

// DataLoads lists DataLoads with their status.
func (c *Client) DataLoads(ctx context.Context) ([]DataLoadView, error) {
	var out []DataLoadView
	return out, c.do(ctx, http.MethodGet, APIPrefix+"/dataloads", nil, &out)
}

// ColdStart shows a revision's cold start: in progress and the last one.
func (c *Client) ColdStart(ctx context.Context, namespace, revision string) (ColdStartStatus, error) {
	var out ColdStartStatus
	return out, c.do(ctx, http.MethodGet, APIPrefix+"/revisions/"+url.PathEscape(namespace)+"/"+url.PathEscape(revision)+"/coldstart", nil, &out)
}

// GPUs lists the GPUs with what is reserved and used on each.
func (c *Client) GPUs(ctx context.Context) ([]GPUView, error) {
	var out []GPUView
	return out, c.do(ctx, http.MethodGet, APIPrefix+"/gpus", nil, &out)
}

// ImageCaches lists ImageCaches with their images.
func (c *Client) ImageCaches(ctx context.Context) ([]ImageCacheView, error) {
	var out []ImageCacheView
	return out, c.do(ctx, http.MethodGet, APIPrefix+"/imagecaches", nil, &out)
}

// ImageCache shows one ImageCache.
func (c *Client) ImageCache(ctx context.Context, name string) (ImageCacheView, error) {
	var out ImageCacheView
	return out, c.do(ctx, http.MethodGet, APIPrefix+"/imagecaches/"+url.PathEscape(name), nil, &out)
}

// Describe shows one service.
func (c *Client) Describe(ctx context.Context, namespace, name string) (ServiceDetail, error) {
	var out ServiceDetail
	return out, c.do(ctx, http.MethodGet, APIPrefix+"/services/"+url.PathEscape(namespace)+"/"+url.PathEscape(name), nil, &out)
}

// Logs copies a replica's log, or every replica's of a service when replica is empty.
func (c *Client) Logs(ctx context.Context, namespace, service, replica string, w io.Writer) error {
	path := APIPrefix + "/services/" + url.PathEscape(namespace) + "/" + url.PathEscape(service) + "/logs"
	if replica != "" {
		path = APIPrefix + "/replicas/" + url.PathEscape(replica) + "/logs"
	}
	return c.do(ctx, http.MethodGet, path, nil, w)
}
