package cli

import (
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/infera-dev/infera/internal/manifest"
	"github.com/infera-dev/infera/internal/simulate"
)

// newSimulate replays a request trace through the KPA for what-if tuning.
func newSimulate(stdio IO) *cobra.Command {
	var (
		files     []string
		tracePath string
		service   string
		output    string
		sweeps    []string
		coldStart time.Duration
		until     time.Duration
		p99Budget time.Duration
	)
	cmd := &cobra.Command{
		Use:   "simulate -f SERVICE.yaml [-f CONFIGMAPS.yaml] --trace TRACE.csv",
		Short: "Replay a request trace through the autoscaler for what-if tuning",
		Long: `Simulate replays a request trace through infera's KPA autoscaler (the decider and scaler infera up
runs, decision for decision Knative's) with a modelled revision of the Service in -f, so that its
autoscaling annotations and config-autoscaler can be tuned before deploying. The manifests are
loaded and validated as infera validate does; a config-autoscaler ConfigMap among them applies.

The trace is CSV with the header arrival_s,duration_s, one request a row. Requests are served first
come, first served on ready replicas, containerConcurrency at a time each (unlimited when 0).
The autoscaler sees, each second, the time-weighted average of requests in the system and the
arrivals, and decides every 2 s; replicas it adds are ready after --cold-start.

Output: one row per tick
  t_s,ready,stable_concurrency,panic_concurrency,stable_rps,panic_rps,decider_desired,panic_mode,desired,excess_burst_capacity
then a summary: replica-seconds, cold starts, queue wait p50/p95/p99, longest queue, requests that
waited for a cold start (in CSV as "# name,value" lines).

--sweep KEY=V1,V2 (repeatable) runs every combination instead and prints one summary row each, the
cheapest configuration meeting --p99-budget first. KEY is an autoscaling annotation (target, window,
min-scale, ...), a config-autoscaler key (stable-window, scale-to-zero-grace-period, ...; prefix
config-autoscaler/ where an annotation has the same name), container-concurrency or cold-start.

Exit status: 0 done, 1 invalid manifests or trace, 2 usage.`,
		Example: `  infera simulate -f examples/simulate/service.yaml --trace examples/simulate/trace.csv
  infera simulate -f examples/simulate/service.yaml --trace examples/simulate/trace.csv \
      --sweep target=2,4,8 --sweep window=20s,60s --p99-budget 5s`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return fail(ExitUsage, "simulate: no manifests: pass -f SERVICE.yaml")
			}
			if tracePath == "" {
				return fail(ExitUsage, "simulate: no trace: pass --trace TRACE.csv (header arrival_s,duration_s)")
			}
			if tracePath == "-" && slices.Contains(files, "-") {
				return fail(ExitUsage, "simulate: -f - and --trace - cannot both read standard input")
			}
			format, err := simulate.ParseFormat(output)
			if err != nil {
				return fail(ExitUsage, "%v", err)
			}
			if coldStart < 0 || until < 0 || p99Budget < 0 {
				return fail(ExitUsage, "simulate: --cold-start, --until and --p99-budget must not be negative")
			}
			var sws []simulate.Sweep
			for _, s := range sweeps {
				sw, err := simulate.ParseSweep(s)
				if err != nil {
					return fail(ExitUsage, "%v", err)
				}
				sws = append(sws, sw)
			}

			sources, err := manifest.ReadSources(files, stdinOr(stdio.In))
			if err != nil {
				return fail(ExitFailure, "simulate: %v", err)
			}
			set := manifest.Load(cmd.Context(), sources, manifest.Options{})
			printProblems(stdio.ErrOut, set.Problems) // warnings too, as validate prints them
			if errs := set.Problems.Errors(); len(errs) > 0 {
				fmt.Fprintf(stdio.ErrOut, "%d error(s): fix the manifests first (infera validate shows the same)\n", len(errs))
				return silent(ExitFailure)
			}
			svc, err := pickService(set, service)
			if err != nil {
				return err
			}
			opts := simulate.Options{
				Annotations: svc.Spec.Template.Annotations,
				Config:      set.Knative.Maps[manifest.ConfigAutoscaler],
				ColdStart:   coldStart,
				Until:       until,
			}
			if cc := svc.Spec.Template.Spec.ContainerConcurrency; cc != nil {
				opts.ContainerConcurrency = int(*cc)
			}

			trace, err := readTrace(tracePath, stdio)
			if err != nil {
				return fail(ExitFailure, "%v", err)
			}
			if len(sws) > 0 {
				res, err := simulate.RunSweep(trace, opts, sws, p99Budget)
				if err != nil {
					return fail(ExitFailure, "%v", err)
				}
				if err := simulate.WriteSweep(stdio.Out, res, format); err != nil {
					return fail(exitInternal, "%v", err)
				}
				return nil
			}
			res, err := simulate.Run(trace, opts)
			if err != nil {
				return fail(ExitFailure, "%v", err)
			}
			if err := simulate.Write(stdio.Out, res, format); err != nil {
				return fail(exitInternal, "%v", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&files, "filename", "f", nil, "Service manifest, and optionally Knative ConfigMaps (file, directory or -; repeatable)")
	f.StringVar(&tracePath, "trace", "", "request trace: CSV arrival_s,duration_s (- for stdin)")
	f.StringVar(&service, "service", "", "the Service to simulate when -f holds several (NAME or NAMESPACE/NAME)")
	f.DurationVar(&coldStart, "cold-start", 5*time.Second, "time from a replica being added to being ready")
	f.DurationVar(&until, "until", 0, "end of the simulation (default: 10m after the last arrival)")
	f.StringVarP(&output, "output", "o", "table", "output format: table or csv")
	f.StringArrayVar(&sweeps, "sweep", nil, "KEY=V1,V2,...: run every combination of values (repeatable)")
	f.DurationVar(&p99Budget, "p99-budget", 0, "with --sweep: the p99 queue wait a configuration must meet (0: any)")
	return cmd
}

// pickService finds the Service to simulate: the only one, or the one named.
func pickService(set *manifest.Set, name string) (*servingv1.Service, error) {
	var names []string
	var found *servingv1.Service
	for _, d := range set.Documents {
		svc, ok := d.Object.(*servingv1.Service)
		if !ok {
			continue
		}
		full := d.Namespace + "/" + d.Name
		names = append(names, full)
		if name == d.Name || name == full {
			if found != nil {
				return nil, fail(ExitUsage, "simulate: --service %s: more than one Service of that name; use NAMESPACE/NAME", name)
			}
			found = svc
		}
	}
	sort.Strings(names)
	switch {
	case len(names) == 0:
		return nil, fail(ExitFailure, "simulate: no serving.knative.dev/v1 Service in the manifests")
	case name != "" && found == nil:
		return nil, fail(ExitUsage, "simulate: --service %s: no such Service (have %s)", name, strings.Join(names, ", "))
	case name != "":
		return found, nil
	case len(names) > 1:
		return nil, fail(ExitUsage, "simulate: %d Services (%s): pick one with --service", len(names), strings.Join(names, ", "))
	}
	for _, d := range set.Documents {
		if svc, ok := d.Object.(*servingv1.Service); ok {
			return svc, nil
		}
	}
	return nil, fail(exitInternal, "simulate: lost the Service")
}

func readTrace(path string, stdio IO) ([]simulate.Request, error) {
	if path == "-" {
		return simulate.ReadTrace(stdinOr(stdio.In))
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("simulate: trace: %w", err)
	}
	defer f.Close()
	tr, err := simulate.ReadTrace(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return tr, nil
}
