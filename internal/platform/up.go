package platform

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/infera-dev/infera/examples/quickstart"
	"github.com/infera-dev/infera/internal/gateway"
	"github.com/infera-dev/infera/internal/manifest"
	"github.com/infera-dev/infera/internal/modelserver"
	"github.com/infera-dev/infera/internal/reconciler"
	"github.com/infera-dev/infera/internal/store"
	"github.com/infera-dev/infera/internal/supervisor"
	"github.com/infera-dev/infera/internal/workload"
)

// UpConfig configures Up.
type UpConfig struct {
	Listen   string // gateway, default 127.0.0.1:8080
	Admin    string // admin API, default 127.0.0.1:8081
	StateDir string // default store.DefaultDir()
	// Sources are applied (all or nothing) before serving. With none, Quickstart set and an
	// empty store, the bundled quickstart is applied.
	Sources    []manifest.Source
	Quickstart bool
	Self       string // the infera binary replicas run for command "infera"; default os.Executable
	Sandbox    string // supervisor sandbox: auto, bwrap, none
	Autoscaler string // "kpa" (default) or "fixed"
	QueueDepth int    // activator queue per revision; 0: gateway default (10,000)
	// MaxBodyBytes bounds a request body (413 beyond); 0 is unlimited.
	MaxBodyBytes int64
	Out          io.Writer
	Logger       *slog.Logger
	// Ready, if set, is called with the gateway and admin addresses once both listen.
	Ready func(gateway, admin string)
}

// Up runs the whole platform in the foreground until ctx ends, then shuts down gracefully:
// stop accepting, finish in-flight requests (bounded by the largest revision timeout), stop
// replicas (drain, SIGTERM, SIGKILL after the grace period), close the store.
func Up(ctx context.Context, cfg UpConfig) (err error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8080"
	}
	if cfg.Admin == "" {
		cfg.Admin = "127.0.0.1:8081"
	}
	if cfg.StateDir == "" {
		cfg.StateDir = store.DefaultDir()
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Self == "" {
		if cfg.Self, err = os.Executable(); err != nil {
			return fmt.Errorf("up: cannot find the infera binary for replicas: %w", err)
		}
	}
	log := cfg.Logger
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("up: state dir: %w", err)
	}
	st, err := store.Open(filepath.Join(cfg.StateDir, store.FileName), store.Options{Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()

	gwLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("up: gateway cannot listen on %s: %w (pass --listen)", cfg.Listen, err)
	}
	defer gwLn.Close()
	adminLn, err := net.Listen("tcp", cfg.Admin)
	if err != nil {
		return fmt.Errorf("up: admin API cannot listen on %s: %w (pass --admin)", cfg.Admin, err)
	}
	defer adminLn.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	sources := cfg.Sources
	if len(sources) == 0 && cfg.Quickstart && st.Revision() == 0 {
		if sources, err = prepareQuickstart(cfg.StateDir, cfg.Out); err != nil {
			return err
		}
	}
	requestLog, err := requestLogger(st, sources, os.Stdout)
	if err != nil {
		return err
	}

	var ctrl *Controller
	gw := gateway.New(gateway.Config{
		QueueDepth:   cfg.QueueDepth,
		MaxBodyBytes: cfg.MaxBodyBytes,
		Logger:       log.With("component", "gateway"),
		OnDemand:     func(id workload.RevisionID) { ctrl.Poke(id) },
		RequestLog:   requestLog,
		Registerer:   reg,
	})
	sup, err := supervisor.New(supervisor.Config{
		Dir:      cfg.StateDir,
		Gateway:  gw,
		Sandbox:  cfg.Sandbox,
		Logger:   log.With("component", "supervisor"),
		OnChange: func(workload.RevisionID) { ctrl.Kick() },
	})
	if err != nil {
		return err
	}
	var scaler Scaler = NewFixedScaler()
	if cfg.Autoscaler != "fixed" {
		scaler = newKPA()
	}
	ctrl = NewController(ControllerConfig{
		Store: st, Gateway: gw, Supervisor: supervisorAdapter{sup, gw}, Scaler: scaler,
		Resolve: reconciler.ResolveOptions{Self: cfg.Self},
		Logger:  log.With("component", "controller"),
	})

	reg.MustRegister(ctrl.MetricsCollector())
	if len(sources) > 0 {
		res, err := ctrl.apply(ctx, sources, false)
		for _, p := range res.Problems {
			fmt.Fprintln(cfg.Out, p)
		}
		if err != nil {
			return fmt.Errorf("up: %w", err)
		}
		for _, c := range res.Changes {
			fmt.Fprintln(cfg.Out, c.String())
		}
	}

	runCtx, stopRun := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopRun()
	// One pass before listening, so every stored service has its route from the first request.
	ctrl.pass(runCtx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := ctrl.Run(runCtx); err != nil {
			log.Error("controller stopped", "err", err)
		}
	}()

	gwSrv := &http.Server{Handler: gw.Handler(), ReadHeaderTimeout: 30 * time.Second}
	adminSrv := &http.Server{Handler: ctrl.AdminHandler(reg, nil), ReadHeaderTimeout: 30 * time.Second}
	serveErr := make(chan error, 2)
	go func() { serveErr <- gwSrv.Serve(gwLn) }()
	go func() { serveErr <- adminSrv.Serve(adminLn) }()

	gwURL, adminURL := "http://"+gwLn.Addr().String(), "http://"+adminLn.Addr().String()
	fmt.Fprintf(cfg.Out, "gateway  %s\nadmin    %s  (metrics %s/metrics)\n", gwURL, adminURL, adminURL)
	printCurls(cfg.Out, st, gwLn.Addr().(*net.TCPAddr).Port)
	if cfg.Ready != nil {
		cfg.Ready(gwLn.Addr().String(), adminLn.Addr().String())
	}

	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("up: %w", err)
	}
	fmt.Fprintln(cfg.Out, "infera: shutting down: finishing in-flight requests, then stopping replicas")
	grace := maxTimeout(st) + 5*time.Second
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	// Stop accepting and let in-flight requests (held ones included) finish.
	if e := gwSrv.Shutdown(sctx); e != nil {
		log.Warn("gateway shutdown", "err", e)
	}
	gw.CloseIdleConnections()
	stopRun()
	wg.Wait()
	if e := sup.Shutdown(sctx); e != nil {
		log.Warn("replica shutdown", "err", e)
	}
	adminSrv.Shutdown(sctx)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// prepareQuickstart creates the quickstart model once and returns the quickstart manifest with
// the state directory filled in.
func prepareQuickstart(stateDir string, out io.Writer) ([]manifest.Source, error) {
	dir := filepath.Join(stateDir, quickstart.ModelDir)
	if _, err := os.Stat(filepath.Join(dir, "config.json")); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(out, "quickstart: writing a synthetic model to %s (random weights, not a trained model)\n", dir)
		if _, err := modelserver.Init(dir, modelserver.InitOptions{Name: "llm"}); err != nil {
			return nil, fmt.Errorf("up: quickstart model: %w", err)
		}
	}
	data := bytes.ReplaceAll(quickstart.Manifest, []byte(quickstart.StateDirVar), []byte(stateDir))
	return []manifest.Source{{Name: "quickstart/llm.yaml", Data: data}}, nil
}

// requestLogger builds Knative's request log from config-observability (input over stored).
func requestLogger(st *store.Store, sources []manifest.Source, w io.Writer) (*gateway.RequestLogger, error) {
	snap, err := readSnapshot(st)
	if err != nil {
		return nil, err
	}
	set := manifest.Load(context.Background(), sources, manifest.Options{Applied: snap.docs})
	kc := set.Knative
	if kc == nil || kc.Observability == nil || !kc.Observability.EnableRequestLog {
		return nil, nil
	}
	return gateway.NewRequestLogger(kc.Observability.RequestLogTemplate, w)
}

func printCurls(w io.Writer, st *store.Store, port int) {
	snap, err := readSnapshot(st)
	if err != nil {
		return
	}
	domain := snap.knativeConfig().Domain()
	if len(snap.services) == 0 {
		fmt.Fprintln(w, "\nno services yet: infera apply -f SERVICE.yaml (the quickstart runs only on an empty state dir)")
	}
	for _, s := range snap.services {
		host := fmt.Sprintf("%s.%s.%s:%d", s.Name, s.Namespace, domain, port)
		fmt.Fprintf(w, "\n%s/%s:\n  curl http://%s/v1/chat/completions -d '{\"model\":%q,\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}],\"stream\":true}'\n",
			s.Namespace, s.Name, host, s.Name)
	}
}

// maxTimeout is the largest timeoutSeconds of any service: the bound on draining.
func maxTimeout(st *store.Store) time.Duration {
	d := 300 * time.Second
	snap, err := readSnapshot(st)
	if err != nil {
		return d
	}
	for _, s := range snap.services {
		if t := s.Spec.Template.Spec.TimeoutSeconds; t != nil && time.Duration(*t)*time.Second > d {
			d = time.Duration(*t) * time.Second
		}
	}
	return d
}
