// Package platform is the composition root of `infera up`: it opens the store, builds the
// gateway, supervisor, scaler and controller with one clock, serves the gateway and the admin
// API, and owns their lifecycle. Every long-lived component has Run(ctx) error (or is an
// http.Server); a component that fails stops up with its error. Shutdown has two budgets:
// requests drain first (bounded by the largest timeoutSeconds), then the supervisor stops the
// replicas (each bounded by its own grace period). Only internal/cli imports this package.
package platform

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/infera-dev/infera/internal/ack"
	"github.com/infera-dev/infera/internal/container"
	"github.com/infera-dev/infera/internal/dockerrt"
	"github.com/infera-dev/infera/internal/imagecache"
	"github.com/infera-dev/infera/internal/placement"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/infera-dev/infera/examples/quickstart"
	"github.com/infera-dev/infera/internal/adminapi"
	"github.com/infera-dev/infera/internal/autoscaler"
	"github.com/infera-dev/infera/internal/clock"
	"github.com/infera-dev/infera/internal/coldstart"
	"github.com/infera-dev/infera/internal/controller"
	"github.com/infera-dev/infera/internal/gateway"
	"github.com/infera-dev/infera/internal/manifest"
	"github.com/infera-dev/infera/internal/modelcache"
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
	// Runtime runs containers: "auto" (default: a container with no command runs as an
	// image when a Docker Engine API answers), "process" or "docker".
	Runtime string
	// AllowPrivileged lets securityContext.privileged containers run (docker runtime).
	AllowPrivileged bool
	// AdminTokenFile holds the admin API's bearer token (--admin-token-file); every request
	// then needs it. Without one, an admin address that is not loopback gets a token made at
	// first start in StateDir/admin-token (0600).
	AdminTokenFile string
	// GPUs is --gpus: "" or "auto" (NVML when its library loads, else none), "none", or a
	// declared inventory, one Kubernetes quantity per device ("80Gi,80Gi").
	GPUs string
	// GPUEnforcer is --gpu-enforcer: "" (a share is a reservation), "hami" or "mps".
	GPUEnforcer string
	QueueDepth  int // activator queue per revision; 0: gateway default (10,000)
	// MaxBodyBytes bounds a request body (413 beyond); 0 is unlimited.
	MaxBodyBytes int64
	Out          io.Writer
	// Terminal: Out is a terminal, so dataset progress is drawn as bars in place (else plain
	// lines every 10 s).
	Terminal bool
	Logger   *slog.Logger
	// Ready, if set, is called with the gateway and admin addresses once both listen.
	Ready func(gateway, admin string)
	// GatewayListener and AdminListener, when set, are used instead of listening on Listen
	// and Admin (socket activation, tests). Up closes them.
	GatewayListener, AdminListener net.Listener
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

	gwLn := cfg.GatewayListener
	if gwLn == nil {
		if gwLn, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("up: gateway cannot listen on %s: %w (pass --listen)", cfg.Listen, err)
		}
	}
	defer gwLn.Close()
	adminLn := cfg.AdminListener
	if adminLn == nil {
		if adminLn, err = net.Listen("tcp", cfg.Admin); err != nil {
			return fmt.Errorf("up: admin API cannot listen on %s: %w (pass --admin)", cfg.Admin, err)
		}
	}
	defer adminLn.Close()
	token, err := adminToken(cfg, adminLn.Addr())
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	applied, _, err := controller.ApplyDocuments(st)
	if err != nil {
		return fmt.Errorf("up: %w", err)
	}
	sources := cfg.Sources
	if len(sources) == 0 && cfg.Quickstart && st.Revision() == 0 {
		if sources, err = prepareQuickstart(cfg.StateDir, cfg.Out); err != nil {
			return err
		}
	}
	requestLog, err := requestLogger(applied, sources, os.Stdout, log)
	if err != nil {
		return err
	}

	// One clock for every component.
	clk := clock.Real{}
	// Cold starts: the gateway, the supervisor and the controller's scaling loop each report
	// their own times to it.
	cold, err := coldstart.New(coldstart.Config{Registerer: reg, Logger: log.With("component", "coldstart")})
	if err != nil {
		return fmt.Errorf("up: %w", err)
	}
	var ctrl *controller.Controller
	var sup *supervisor.Supervisor
	gw := gateway.New(gateway.Config{
		QueueDepth:   cfg.QueueDepth,
		MaxBodyBytes: cfg.MaxBodyBytes,
		Clock:        clk,
		Logger:       log.With("component", "gateway"),
		OnDemand:     func(id workload.RevisionID) { ctrl.Poke(id); sup.Demand(id) },
		OnFirstByte:  cold.FirstByte,
		ColdStartProgress: func(id workload.RevisionID) string {
			return coldStartProgress(id, ctrl.Revisions(), sup.Replicas())
		},
		RequestLog: requestLog,
		Registerer: reg,
	})
	gpus, err := openGPUs(cfg, log)
	if err != nil {
		return err
	}
	defer gpus.inv.Close()
	docker, err := connectEngine(ctx, cfg, clk, log)
	if err != nil {
		return err
	}
	runtimes := map[string]supervisor.Runtime{}
	engineHost := ""
	var images *imagecache.Manager
	if docker != nil {
		if images, err = imagecache.New(imagecache.Config{
			Dir: filepath.Join(cfg.StateDir, "imagecache"), Engine: docker.engine, Clock: clk,
			Logger: log.With("component", "imagecache"),
		}); err != nil {
			return fmt.Errorf("up: image cache: %w", err)
		}
		docker.rt.SetCache(cachedImages{images})
		runtimes[supervisor.RuntimeDocker] = docker.rt
		engineHost = docker.engine.Host()
		defer docker.engine.Close()
	}
	sup, err = supervisor.New(supervisor.Config{
		Dir:         cfg.StateDir,
		Gateway:     gw,
		Sandbox:     cfg.Sandbox,
		Runtimes:    runtimes,
		GPUs:        gpus.devices,
		GPUEnforcer: gpus.enforcer,
		GPUReleased: gpus.released,
		Units: func(rev workload.Revision) (*ack.ResourcePolicySpec, string, []placement.Pool) {
			return ctrl.UnitsFor(rev, gpus.indices())
		},
		Clock:     clk,
		Logger:    log.With("component", "supervisor"),
		OnChange:  func(workload.RevisionID) { ctrl.Kick() },
		OnReplica: func(st supervisor.ReplicaStatus) { cold.Replica(replicaTimes(st)) },
	})
	if err != nil {
		return err
	}
	cache, err := modelcache.NewManager(modelcache.Config{
		Root:      filepath.Join(cfg.StateDir, "cache"),
		Clock:     clk,
		Logger:    log.With("component", "modelcache"),
		NewSource: modelcache.NewSource,
		Fetcher:   &modelcache.Fetcher{Logger: log.With("component", "fetcher")},
		OnChange:  func(string, string) { ctrl.Recheck() }, // called from Run, once ctrl is set
	})
	if err != nil {
		return fmt.Errorf("up: model cache: %w", err)
	}
	var scaler controller.Scaler = autoscaler.New(nil)
	if cfg.Autoscaler == "fixed" {
		scaler = autoscaler.NewFixed(nil)
	}
	ctrl = controller.New(controller.Config{
		Store: st, Gateway: gw, Supervisor: supervisorAdapter{sup, gw}, Scaler: scaler,
		Resolve:     reconciler.ResolveOptions{Self: cfg.Self, Runtime: cfg.Runtime, Engine: engineHost},
		Datasets:    cache,
		ColdStarts:  cold,
		ImageCaches: imageCachesOf(images),
		// config-observability read live: a changed request log applies without a restart.
		OnKnativeConfig: func(kc *manifest.KnativeConfig) {
			l, err := requestLoggerOf(kc, os.Stdout, log)
			if err != nil {
				log.Error("config-observability: request log not changed", "err", err)
				return
			}
			gw.SetRequestLog(l)
		},
		Logger: log.With("component", "controller"),
		Clock:  clk,
	})
	reg.MustRegister(ctrl.Collector())

	// A component that fails stops up; failed says which and why.
	failed := make(chan error, 5)
	// The supervisor and the model cache run first and stop last: they own the replica
	// processes and what the replicas read.
	backCtx, stopBack := context.WithCancel(context.Background())
	var back errgroup.Group
	background := func(name string, run func(context.Context) error) {
		back.Go(func() error {
			err := run(backCtx)
			if err != nil && backCtx.Err() == nil {
				failed <- fmt.Errorf("up: %s: %w", name, err)
			}
			return err
		})
	}
	background("supervisor", sup.Run)
	background("model cache", cache.Run)
	if images != nil {
		background("image cache", images.Run)
	}
	background("gpu accounting", func(ctx context.Context) error {
		return gpus.runAccounting(ctx, clk, sup, log.With("component", "gpu"))
	})
	stopBackground := sync.OnceValue(func() error { stopBack(); return back.Wait() })
	defer stopBackground()

	if len(sources) > 0 {
		res, err := ctrl.Apply(ctx, sources, false)
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
	// One pass before listening, so every stored service has its route from the first request.
	if err := ctrl.Sync(ctx); err != nil {
		return fmt.Errorf("up: %w", err)
	}

	gwSrv := &http.Server{Handler: gw.Handler(), ReadHeaderTimeout: 30 * time.Second}
	reg.MustRegister(gpus.collector(sup))
	adminSrv := &http.Server{Handler: adminapi.Guard(adminapi.Handler(ctrl, reg, map[string]http.Handler{
		"GET " + adminapi.APIPrefix + "/gpus": gpus.handler(sup),
	}), token), ReadHeaderTimeout: 30 * time.Second}
	ctrlCtx, stopController := context.WithCancel(context.Background())
	defer stopController()
	var g errgroup.Group
	component := func(name string, run func() error) {
		g.Go(func() error {
			err := run()
			if err != nil {
				failed <- fmt.Errorf("up: %s: %w", name, err)
			}
			return err
		})
	}
	component("controller", func() error { return ctrl.Run(ctrlCtx) })
	component("gateway", func() error { return serve(gwSrv, gwLn) })
	component("admin API", func() error { return serve(adminSrv, adminLn) })
	prog := &progress{w: cfg.Out, tty: cfg.Terminal, clock: clk, list: ctrl.Datasets, plainEvery: 10 * time.Second}
	component("progress", func() error { return prog.run(ctrlCtx) })

	gwURL, adminURL := "http://"+gwLn.Addr().String(), "http://"+adminLn.Addr().String()
	fmt.Fprintf(cfg.Out, "gateway  %s\nadmin    %s  (metrics %s/metrics)\n", gwURL, adminURL, adminURL)
	printCurls(cfg.Out, ctrl.Services(), gwLn.Addr().(*net.TCPAddr).Port)
	if cfg.Ready != nil {
		cfg.Ready(gwLn.Addr().String(), adminLn.Addr().String())
	}

	select {
	case <-ctx.Done():
	case err = <-failed: // a component failed: stop everything, and say why
		log.Error("stopping", "err", err)
	}
	fmt.Fprintln(cfg.Out, "infera: shutting down: finishing in-flight requests, then stopping replicas")
	// Requests first, on their own budget: stop accepting and let in-flight and held requests
	// (websockets and h2c included, which Shutdown does not wait for) finish.
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), maxTimeout(st)+5*time.Second)
	defer cancelDrain()
	if e := gwSrv.Shutdown(drainCtx); e != nil {
		log.Warn("gateway shutdown", "err", e)
	}
	if e := gw.Drain(drainCtx); e != nil {
		log.Warn("gateway drain", "err", e)
	}
	gw.CloseIdleConnections()
	stopController()
	adminCtx, cancelAdmin := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelAdmin()
	adminSrv.Shutdown(adminCtx)
	g.Wait()
	// Then the replicas, on theirs: the supervisor bounds each by its revision's grace period.
	if e := stopBackground(); e != nil {
		log.Warn("replica and model cache shutdown", "err", e)
	}
	return err
}

// serve is an http.Server's Serve, with the normal end (Shutdown) as nil.
func serve(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
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
func requestLogger(applied []*manifest.Document, sources []manifest.Source, w io.Writer, log *slog.Logger) (*gateway.RequestLogger, error) {
	set := manifest.Load(context.Background(), sources, manifest.Options{Applied: applied})
	return requestLoggerOf(set.Knative, w, log)
}

// requestLoggerOf is the request log config-observability asks for; nil when it is off.
func requestLoggerOf(kc *manifest.KnativeConfig, w io.Writer, log *slog.Logger) (*gateway.RequestLogger, error) {
	if kc == nil || kc.Observability == nil || !kc.Observability.EnableRequestLog {
		return nil, nil
	}
	o := kc.Observability
	return gateway.NewRequestLogger(o.RequestLogTemplate, w, gateway.LogProbeRequests(o.EnableProbeRequestLog),
		gateway.LogTemplateErrors(log.With("component", "gateway")))
}

func printCurls(w io.Writer, services []adminapi.ServiceView, port int) {
	if len(services) == 0 {
		fmt.Fprintln(w, "\nno services yet: infera apply -f SERVICE.yaml (the quickstart runs only on an empty state dir)")
	}
	for _, s := range services {
		host := strings.TrimPrefix(s.URL, "http://")
		fmt.Fprintf(w, "\n%s/%s:\n  curl http://%s:%d/v1/chat/completions -d '{\"model\":%q,\"messages\":[{\"role\":\"user\",\"content\":\"hello\"}],\"stream\":true}'\n",
			s.Namespace, s.Name, host, port, s.Name)
	}
}

// maxTimeout is the largest timeoutSeconds of any service: the bound on draining requests.
func maxTimeout(st *store.Store) time.Duration {
	d := workload.DefaultTimeout
	docs, _, err := controller.ApplyDocuments(st)
	if err != nil {
		return workload.MaxTimeout
	}
	for _, doc := range docs {
		if s, ok := doc.Object.(*servingv1.Service); ok {
			if t := s.Spec.Template.Spec.TimeoutSeconds; t != nil && time.Duration(*t)*time.Second > d {
				d = time.Duration(*t) * time.Second
			}
		}
	}
	return d
}

// dockerRuntime is the container engine and the runtime on it, when one answers.
type dockerRuntime struct {
	engine *container.Engine
	rt     *dockerrt.Runtime
}

// connectEngine reaches the Docker Engine API for the docker runtime: required with
// --runtime=docker, tried with auto, skipped with process. Containers a killed infera left on
// this state directory are removed before anything starts.
func connectEngine(ctx context.Context, cfg UpConfig, clk clock.Clock, log *slog.Logger) (*dockerRuntime, error) {
	switch cfg.Runtime {
	case "", reconciler.RuntimeAuto, reconciler.RuntimeDocker:
	case reconciler.RuntimeProcess:
		return nil, nil
	default:
		return nil, fmt.Errorf("up: --runtime %q: want auto, process or docker", cfg.Runtime)
	}
	eng, err := container.Connect(ctx, 3*time.Second)
	if err != nil {
		if cfg.Runtime == reconciler.RuntimeDocker {
			return nil, fmt.Errorf("up: --runtime=docker: %w", err)
		}
		log.Info("no container engine: containers with no command cannot run as images", "host", container.DefaultHost(), "error", err)
		return nil, nil
	}
	rt, err := dockerrt.NewRuntime(dockerrt.RuntimeConfig{
		Engine: eng, StateDir: cfg.StateDir, AllowPrivileged: cfg.AllowPrivileged,
		Clock: clk, Logger: log.With("component", "docker"),
	})
	if err != nil {
		eng.Close()
		return nil, fmt.Errorf("up: %w", err)
	}
	n, err := rt.RemoveOrphans(ctx)
	if err != nil {
		eng.Close()
		return nil, fmt.Errorf("up: remove containers left by an earlier infera: %w", err)
	}
	log.Info("container engine", "host", eng.Host(), "orphans_removed", n)
	return &dockerRuntime{engine: eng, rt: rt}, nil
}

// cachedImages shows the ImageCache manager to the docker runtime.
type cachedImages struct{ m *imagecache.Manager }

func (c cachedImages) Cached(image string) bool {
	_, ok := c.m.Cached(image)
	return ok
}

func (c cachedImages) Touch(image string) { c.m.Touch(image) }

// imageCachesOf is m as the controller's ImageCaches; nil (no engine) stays nil.
func imageCachesOf(m *imagecache.Manager) controller.ImageCaches {
	if m == nil {
		return nil
	}
	return m
}

// adminToken is the bearer token the admin API requires: the one in --admin-token-file, or for
// an address that is not loopback the state directory's (made at first start); none for a
// loopback address without a token file. The admin API applies manifests, which start
// commands: anyone who can reach it must be someone trusted.
func adminToken(cfg UpConfig, addr net.Addr) (string, error) {
	if cfg.AdminTokenFile != "" {
		tok, err := adminapi.LoadOrCreateToken(cfg.AdminTokenFile, false)
		if err != nil {
			return "", fmt.Errorf("up: --admin-token-file: %w", err)
		}
		return tok, nil
	}
	if adminapi.IsLoopback(addr) {
		return "", nil
	}
	file := filepath.Join(cfg.StateDir, adminapi.TokenFile)
	tok, err := adminapi.LoadOrCreateToken(file, true)
	if err != nil {
		return "", fmt.Errorf("up: %w", err)
	}
	fmt.Fprintf(cfg.Out, "admin API on %s is not loopback: every request needs the bearer token in %s ($%s for the CLI)\n", addr, file, adminapi.TokenEnv)
	return tok, nil
}
