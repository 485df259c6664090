package modelserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures Run. Every knob is explicit: Run reads no environment.
type Config struct {
	ModelDir string // written by Init; required
	Addr     string // listen address, ":8080" if empty
	// Names are the served model names, the primary first: the name responses
	// and logs use when a request names none. Each is accepted in a request's
	// "model", listed by GET /v1/models and served under /v2/models/{name}.
	// If empty, see Service.
	Names []string
	// Service is the Knative service the server runs in ($K_SERVICE), the
	// name the gateway routes a request's "model" by, so it is always
	// served: with no Names as the primary name, config.json's name an alias
	// (clients of either work), else as the last alias. With neither,
	// config.json's name is the only one.
	Service         string
	Parallelism     int           // requests generating at once, 1 if 0; more wait in FIFO order
	MaxTokens       int           // largest max_tokens a request may ask for, 4096 if 0
	LoadParallelism int           // reads of the weights in flight at once, DefaultLoadParallelism if 0
	Mmap            bool          // map the weights instead of reading them (LoadOptions.Mmap)
	Verify          bool          // hash the weights against config.json before becoming ready
	DrainTimeout    time.Duration // bound on finishing in-flight requests at shutdown, 30s if 0
	Logger          *slog.Logger  // discards if nil

	hooks *hooks // tests only
}

// Defaults of Config.
const (
	DefaultAddr         = ":8080"
	DefaultMaxTokens    = maxContext
	DefaultDrainTimeout = 30 * time.Second
	defaultMaxTokens    = 16 // max_tokens of a request that names none
	maxBodyBytes        = 4 << 20
	maxBatch            = 64 // prompts in one request
)

func (c Config) withDefaults() (Config, error) {
	if c.ModelDir == "" {
		return c, errors.New("modelserver: config: ModelDir is required")
	}
	if c.Parallelism < 0 || c.MaxTokens < 0 || c.LoadParallelism < 0 || c.DrainTimeout < 0 {
		return c, fmt.Errorf("modelserver: config: Parallelism %d, MaxTokens %d, LoadParallelism %d and DrainTimeout %v must not be negative",
			c.Parallelism, c.MaxTokens, c.LoadParallelism, c.DrainTimeout)
	}
	if slices.Contains(c.Names, "") {
		return c, fmt.Errorf("modelserver: config: Names %q holds an empty name", c.Names)
	}
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Parallelism == 0 {
		c.Parallelism = 1
	}
	if c.MaxTokens == 0 {
		c.MaxTokens = DefaultMaxTokens
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.hooks == nil {
		c.hooks = &hooks{}
	}
	return c, nil
}

// hooks let tests see and pace what the server does; all may be nil.
type hooks struct {
	listening func(addr string)                                // listening, before the model loads
	queued    func(r *http.Request)                            // r waits for a slot
	gaveUp    func(r *http.Request, err error)                 // r left the queue without a slot
	acquired  func(r *http.Request)                            // r holds a slot
	token     func(r *http.Request, i int)                     // r is about to generate token i
	finished  func(r *http.Request, reason string, tokens int) // a prompt of r is done
	draining  func(h http.Handler)                             // health reports draining, before Shutdown
}

// server is the HTTP face of a Model.
type server struct {
	cfg      Config
	log      *slog.Logger
	hooks    *hooks
	gate     *gate
	model    atomic.Pointer[Model] // nil while loading
	names    []string              // served names, primary first; set before model is stored
	created  int64
	draining atomic.Bool

	mu       sync.Mutex
	closed   bool           // the model is being released: no more generation
	inflight sync.WaitGroup // generating requests
}

// Run listens on cfg.Addr, loads the model and serves it until ctx ends.
// While loading, /health and /v2/health/ready answer 503 and inference 503;
// ready, if not nil, is called with the listening address once the model
// is loaded and served. When ctx ends, health turns 503 at once, requests in
// flight or queued finish (for at most cfg.DrainTimeout, after which they are
// cut off), the model is released, and Run returns nil; it returns an error
// if the model fails to load, the listener fails or the drain times out.
func Run(ctx context.Context, cfg Config, ready func(addr string)) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	s := &server{cfg: cfg, log: cfg.Logger, hooks: cfg.hooks, gate: newGate(cfg.Parallelism)}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("modelserver: listen: %w", err)
	}
	addr := ln.Addr().String()
	// Request contexts derive from base, which a forced shutdown cancels.
	base, cut := context.WithCancel(context.WithoutCancel(ctx))
	defer cut()
	handler := s.routes()
	// HTTP/1.1, and HTTP/2 without TLS (h2c with prior knowledge), which
	// Knative uses for a port named h2c and a gateway may use to multiplex.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Protocols:         &protocols,
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
		// http.Server logs accept errors and handler panics here: bugs an
		// operator must see.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if f := s.hooks.listening; f != nil {
		f(addr)
	}

	loadErr := s.load(ctx)
	if loadErr == nil {
		s.log.Info("model server ready", "addr", addr, "model", s.names[0])
		if ready != nil {
			ready(addr)
		}
	}
	var serveErr error
	if loadErr == nil {
		select {
		case <-ctx.Done():
		case serveErr = <-served:
		}
	}
	drainErr := s.shutdown(ctx, srv, handler, cut)
	if serveErr == nil {
		serveErr = <-served
	}
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	if loadErr != nil && ctx.Err() != nil {
		loadErr = nil // stopped while loading: a clean shutdown
	}
	if serveErr != nil {
		serveErr = fmt.Errorf("modelserver: serve: %w", serveErr)
	}
	return errors.Join(loadErr, serveErr, drainErr)
}

// load loads (and verifies) the model, then publishes it to the handlers.
func (s *server) load(ctx context.Context) error {
	m, err := Load(ctx, s.cfg.ModelDir, LoadOptions{Parallelism: s.cfg.LoadParallelism, Mmap: s.cfg.Mmap})
	if err != nil {
		return err
	}
	var verifyTook time.Duration
	if s.cfg.Verify {
		start := time.Now()
		if err := m.verify(ctx); err != nil {
			m.Close()
			return err
		}
		verifyTook = time.Since(start)
	}
	info, st := m.Info(), m.LoadStats()
	s.names = servedNames(s.cfg, info.Name)
	s.created = time.Now().Unix()
	s.log.Info("model loaded", "model", s.names[0], "aliases", s.names[1:], "path", info.Weights,
		"bytes", st.Bytes, "seconds", st.Duration.Seconds(), "mb_per_s", st.MBPerSecond(),
		"load_method", st.Method, "load_parallelism", st.Parallelism,
		"hidden", info.Hidden, "layers", info.Layers, "verified", s.cfg.Verify, "verify_seconds", verifyTook.Seconds(),
		"note", "synthetic weights")
	s.model.Store(m)
	return nil
}

// servedNames is cfg.Names, else configName, with cfg.Service first when
// there are no Names and last when they leave it out (the gateway routes the
// service's name here whatever the server is told to call itself): the
// primary first, without repeats.
func servedNames(cfg Config, configName string) []string {
	names := append(slices.Clip(cfg.Names), cfg.Service)
	if len(cfg.Names) == 0 {
		names = []string{cfg.Service, configName}
	}
	var out []string
	for _, n := range names {
		if n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// shutdown reports not ready, lets requests in flight finish within the
// drain timeout, cuts off the rest, and releases the model once no request
// uses it.
func (s *server) shutdown(ctx context.Context, srv *http.Server, h http.Handler, cut context.CancelFunc) error {
	s.draining.Store(true)
	s.log.Info("model server draining", "timeout_s", s.cfg.DrainTimeout.Seconds(), "queued", s.gate.waiting())
	if f := s.hooks.draining; f != nil {
		f(h)
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.DrainTimeout)
	defer cancel()
	var err error
	if serr := srv.Shutdown(dctx); serr != nil {
		cut()
		srv.Close()
		err = fmt.Errorf("modelserver: drain: requests cut off after %v: %w", s.cfg.DrainTimeout, serr)
	}
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.inflight.Wait() // handlers still running after a cut notice it within a token
	if m := s.model.Load(); m != nil {
		if cerr := m.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("modelserver: release the weights: %w", cerr))
		}
	}
	s.log.Info("model server stopped")
	return err
}

// enter registers a generating request; false once the model is closing.
func (s *server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.inflight.Add(1)
	return true
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.handleHealth)

	mux.HandleFunc("GET /v1/models", s.handleModels)
	mux.HandleFunc("GET /v1/models/{model...}", s.handleModel) // names like org/model
	mux.HandleFunc("POST /v1/completions", s.handleCompletions)
	mux.HandleFunc("POST /v1/chat/completions", s.handleChatCompletions)

	mux.HandleFunc("GET /v2", s.handleServerMetadata)
	mux.HandleFunc("GET /v2/health/live", s.handleLive)
	mux.HandleFunc("GET /v2/health/ready", s.handleReady)
	for _, p := range []string{"/v2/models/{model}", "/v2/models/{model}/versions/{version}"} {
		mux.HandleFunc("GET "+p, s.handleModelMetadata)
		mux.HandleFunc("GET "+p+"/ready", s.handleModelReady)
		mux.HandleFunc("POST "+p+"/infer", s.handleInfer)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { s.handleNoRoute(mux, w, r) })
	return mux
}

// state is "loading", "ready" or "draining".
func (s *server) state() string {
	switch {
	case s.draining.Load():
		return "draining"
	case s.model.Load() == nil:
		return "loading"
	}
	return "ready"
}

func (s *server) handleHealth(w http.ResponseWriter, r *http.Request) {
	st := s.state()
	code := http.StatusOK
	if st != "ready" {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]string{"status": st})
}

// handleNoRoute answers 405 for a known path and another method, and 404
// otherwise, in the error shape of the API the path belongs to.
func (s *server) handleNoRoute(mux *http.ServeMux, w http.ResponseWriter, r *http.Request) {
	e := &httpError{status: http.StatusNotFound, msg: fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path)}
	for _, m := range []string{http.MethodGet, http.MethodPost} {
		other := r.Clone(r.Context())
		other.Method = m
		if _, pattern := mux.Handler(other); m != r.Method && pattern != "/" {
			w.Header().Set("Allow", m)
			e = &httpError{status: http.StatusMethodNotAllowed, msg: fmt.Sprintf("%s %s: method not allowed, use %s", r.Method, r.URL.Path, m)}
		}
	}
	if len(r.URL.Path) >= 3 && r.URL.Path[:3] == "/v2" {
		writeKServeError(w, e)
		return
	}
	writeOpenAIError(w, e)
}

// httpError is a failure together with the HTTP status it maps to; the
// OpenAI and KServe routes write it in their own shapes.
type httpError struct {
	status int
	msg    string
	param  string // OpenAI's "param"
	code   string // OpenAI's "code"
}

func (e *httpError) Error() string { return e.msg }

func errBadRequest(param, format string, args ...any) *httpError {
	return &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...), param: param}
}

func errModelNotFound(name string) *httpError {
	return &httpError{status: http.StatusNotFound, msg: fmt.Sprintf("The model `%s` does not exist.", name),
		param: "model", code: "model_not_found"}
}

var (
	errLoading  = &httpError{status: http.StatusServiceUnavailable, msg: "the model is still loading"}
	errStopping = &httpError{status: http.StatusServiceUnavailable, msg: "the server is shutting down"}
)

// loaded returns the model if it is loaded and name is one of its served
// names, or empty, and the name to answer with: name, or the primary name
// when it is empty.
func (s *server) loaded(name string) (*Model, string, *httpError) {
	m := s.model.Load()
	if m == nil {
		return nil, "", errLoading
	}
	switch {
	case name == "":
		return m, s.names[0], nil
	case !slices.Contains(s.names, name):
		return nil, "", errModelNotFound(name)
	}
	return m, name, nil
}

// decodeBody decodes a JSON request body of at most maxBodyBytes into v.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) *httpError {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	err := dec.Decode(v)
	if err == nil {
		// Read to the end, which also lets the server notice a client
		// that goes away while we generate.
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("unexpected data after the JSON value")
		}
	}
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tooBig):
		return &httpError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("request body exceeds %d bytes", tooBig.Limit)}
	}
	return errBadRequest("", "invalid JSON body: %v", err)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // a failed write means the client left
}

// abortUnanswered ends a request there is no one to answer (the client left, or the drain cut
// it off) by dropping its connection: net/http would otherwise send an empty 200 for a handler
// that returns without writing, or end a stream as if it were complete.
func abortUnanswered() { panic(http.ErrAbortHandler) }

// statusOf maps a generation error to an httpError, or nil when the client
// is gone (or was cut off) and there is no one to answer.
func statusOf(err error) *httpError {
	var he *httpError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &he):
		return he
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.Is(err, errClientGone):
		return nil
	}
	return &httpError{status: http.StatusInternalServerError, msg: err.Error()}
}
