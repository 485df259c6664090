package cli

import (
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/infera-dev/infera/internal/manifest"
	"github.com/infera-dev/infera/internal/platform"
	"github.com/infera-dev/infera/internal/store"
)

func newUp(stdio IO) *cobra.Command {
	var cfg platform.UpConfig
	var files []string
	var logLevel string
	cmd := &cobra.Command{
		Use:   "up [-f FILE|DIR]...",
		Short: "Run the platform in the foreground: gateway, autoscaler, replicas, admin API",
		Long: `Up runs everything in the foreground: the state store, the reconciler, the gateway (activator,
load balancer and queue-proxy in one hop), the autoscaler, the replica supervisor and the admin
API. It applies the manifests given with -f (all or nothing) and restores whatever an earlier run
stored, so a restart brings every service back. With no -f and an empty state dir it runs the
bundled quickstart: a Service "llm" serving infera's reference model server.

SIGINT or SIGTERM stops it gracefully: no new connections, in-flight requests finish (up to the
largest timeoutSeconds), then replicas are drained and stopped. A second signal exits at once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fail(ExitUsage, "up: --log-level %q: use debug, info, warn or error", logLevel)
			}
			if cfg.Autoscaler != "kpa" && cfg.Autoscaler != "fixed" {
				return fail(ExitUsage, "up: --autoscaler %q: use kpa or fixed", cfg.Autoscaler)
			}
			if len(files) > 0 {
				sources, err := manifest.ReadSources(files, stdinOr(stdio.In))
				if err != nil {
					return fail(ExitFailure, "up: %v", err)
				}
				cfg.Sources = sources
			}
			cfg.Quickstart = len(files) == 0
			cfg.Out = stdio.Out
			cfg.Terminal = isTerminal(stdio.Out)
			cfg.Logger = slog.New(slog.NewTextHandler(stdio.ErrOut, &slog.HandlerOptions{Level: level}))
			if err := platform.Up(cmd.Context(), cfg); err != nil {
				return fail(ExitFailure, "%v", err)
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file, directory or - to apply at start (repeatable)")
	cmd.Flags().StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "gateway address")
	cmd.Flags().StringVar(&cfg.Admin, "admin", DefaultAdmin, "admin API address (/healthz, /metrics, /api/v1)")
	cmd.Flags().StringVar(&cfg.StateDir, "state-dir", store.DefaultDir(), "state directory (store, replica logs, quickstart model)")
	cmd.Flags().StringVar(&cfg.Sandbox, "sandbox", "auto", "replica sandbox for volumes: auto, bwrap or none")
	cmd.Flags().StringVar(&cfg.Runtime, "runtime", "auto", "how containers run: auto (a container with no command runs its image when a Docker Engine API answers at DOCKER_HOST), process or docker; annotation infera.dev/runtime overrides it per revision")
	cmd.Flags().BoolVar(&cfg.AllowPrivileged, "allow-privileged", false, "let containers with securityContext.privileged run (docker runtime)")
	cmd.Flags().StringVar(&cfg.AdminTokenFile, "admin-token-file", "", "file holding the admin API's bearer token, required on every request; without it an admin address that is not loopback gets one made in the state directory (admin-token, 0600)")
	cmd.Flags().StringVar(&cfg.GPUs, "gpus", "auto", "GPU inventory: auto (NVML when the NVIDIA library loads, else none), none, or a declared one, a Kubernetes quantity per device (80Gi,80Gi), shown as declared, never as measured")
	cmd.Flags().StringVar(&cfg.GPUEnforcer, "gpu-enforcer", "", "enforce GPU memory shares through hami (CUDA_DEVICE_MEMORY_LIMIT_<i>) or mps (CUDA_MPS_PINNED_DEVICE_MEM_LIMIT); empty: a share is a reservation, as in ACK's share mode")
	cmd.Flags().StringVar(&cfg.Autoscaler, "autoscaler", "kpa", "kpa (Knative's autoscaler) or fixed (max(initial-scale, min-scale) replicas)")
	cmd.Flags().IntVar(&cfg.QueueDepth, "queue-depth", 10000, "requests the activator holds per revision while it has no free replica")
	cmd.Flags().Int64Var(&cfg.MaxBodyBytes, "max-body-bytes", 0, "largest request body the gateway forwards (413 beyond, before anything reaches a replica: the body is read whole first); 0 is unlimited and streams bodies")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error (logs go to stderr)")
	return cmd
}
