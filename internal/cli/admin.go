package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sigs.k8s.io/yaml"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/infera-dev/infera/internal/adminapi"
	"github.com/infera-dev/infera/internal/manifest"
	"github.com/infera-dev/infera/internal/platform"
	"github.com/infera-dev/infera/internal/store"
)

// isTerminal reports whether w is a terminal (progress is drawn in place there).
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}

// DefaultAdmin is the admin API address `infera up` listens on and the other commands call.
const DefaultAdmin = "127.0.0.1:8081"

func adminFlag(cmd *cobra.Command, admin *string) {
	def := DefaultAdmin
	if v := os.Getenv("INFERA_ADMIN"); v != "" {
		def = v
	}
	cmd.Flags().StringVar(admin, "admin", def, "admin address of the running infera up (env INFERA_ADMIN)")
}

// clientError is a failed admin API call: exit 1 with the server's or the client's message.
func clientError(name string, err error) error {
	return fail(ExitFailure, "%s: %v", name, err)
}

func printResult(stdio IO, res adminapi.ApplyResult) {
	for _, p := range res.Problems {
		fmt.Fprintln(stdio.ErrOut, p)
	}
	for _, c := range res.Changes {
		fmt.Fprintln(stdio.Out, c.String())
	}
}

func newApply(stdio IO) *cobra.Command {
	var files []string
	var admin, follow string
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|- [-f ...]",
		Short: "Apply manifests to a running infera up, all or nothing",
		Long: `Apply validates the whole set against what is already applied (exactly as infera validate
does) and stores all of it, or nothing when any document has an error. Services are reconciled
at once: a changed template makes a new revision, and traffic moves when it is ready.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tty := isTerminal(stdio.Out)
			switch follow {
			case "auto", "always", "never":
			default:
				return fail(ExitUsage, "apply: --follow %q: use auto, always or never", follow)
			}
			var applied adminapi.ApplyResult
			err := sendManifests(stdio, "apply", files, func(c *adminapi.Client, sources []manifest.Source) (adminapi.ApplyResult, error) {
				res, err := c.Apply(cmd.Context(), sources, dryRun)
				applied = res
				return res, err
			}, admin)
			if err != nil || dryRun || follow == "never" || (follow == "auto" && !tty) {
				return err
			}
			var keys []string
			for _, ch := range applied.Changes {
				if ch.Kind == "Dataset" {
					keys = append(keys, ch.Namespace+"/"+ch.Name)
				}
			}
			if len(keys) == 0 {
				return nil
			}
			c := newClient(admin)
			if err := platform.FollowDatasets(cmd.Context(), stdio.Out, tty, nil, c.Datasets, keys); err != nil {
				return fail(ExitFailure, "apply: %v", err)
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file, directory or - for stdin (repeatable)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate against the running state and show what would change")
	cmd.Flags().StringVar(&follow, "follow", "auto", "follow the fetch of the Datasets applied until each is Ready or Failed: auto (on a terminal), always (plain lines when not a terminal), never")
	adminFlag(cmd, &admin)
	return cmd
}

func newDelete(stdio IO) *cobra.Command {
	var files []string
	var admin string
	cmd := &cobra.Command{
		Use:   "delete -f FILE|DIR|- [-f ...]",
		Short: "Delete the objects named in manifests from a running infera up",
		Long: `Delete removes every object the manifests name. Deleting a Service stops its replicas
(drained first) and removes its revisions.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return sendManifests(stdio, "delete", files, func(c *adminapi.Client, sources []manifest.Source) (adminapi.ApplyResult, error) {
				return c.Delete(cmd.Context(), sources)
			}, admin)
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file, directory or - for stdin (repeatable)")
	adminFlag(cmd, &admin)
	return cmd
}

// sendManifests reads the -f inputs and sends them to the running up with call. A refused set
// (problems in it) prints every problem and exits 1; for apply it also says nothing was applied.
func sendManifests(stdio IO, name string, files []string,
	call func(*adminapi.Client, []manifest.Source) (adminapi.ApplyResult, error), admin string) error {
	sources, err := readInput(name, files, stdio)
	if err != nil {
		return err
	}
	res, err := call(newClient(admin), sources)
	var re *adminapi.ResultError
	if errors.As(err, &re) {
		printResult(stdio, re.Result)
		if name == "apply" {
			fmt.Fprintf(stdio.ErrOut, "%d error(s), %d warning(s): nothing was applied\n", re.Result.Errors, re.Result.Warnings)
		}
		return silent(ExitFailure)
	}
	if err != nil {
		return clientError(name, err)
	}
	printResult(stdio, res)
	return nil
}

func readInput(name string, files []string, stdio IO) ([]manifest.Source, error) {
	if len(files) == 0 {
		return nil, fail(ExitUsage, "%s: no input: pass -f FILE, -f DIR or -f -", name)
	}
	sources, err := manifest.ReadSources(files, stdinOr(stdio.In))
	if err != nil {
		return nil, fail(ExitFailure, "%s: %v", name, err)
	}
	return sources, nil
}

func newGet(stdio IO) *cobra.Command {
	var admin, output string
	var watch bool
	cmd := &cobra.Command{
		Use:       "get services|revisions|replicas|datasets|dataloads|imagecaches|gpus",
		Short:     "List services, revisions, replicas, datasets, dataloads, imagecaches or gpus of a running infera up",
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"services", "revisions", "replicas", "datasets", "dataloads", "imagecaches", "gpus"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput("get", output); err != nil {
				return err
			}
			c := newClient(admin)
			var list func(context.Context) (any, error)
			switch strings.TrimSuffix(args[0], "s") {
			case "service", "ksvc":
				list = lister(c.Services)
			case "revision":
				list = lister(c.Revisions)
			case "replica":
				list = lister(c.Replicas)
			case "dataset":
				list = lister(c.Datasets)
			case "dataload":
				list = lister(c.DataLoads)
			case "imagecache":
				list = lister(c.ImageCaches)
			case "gpu":
				list = lister(c.GPUs)
			default:
				return fail(ExitUsage, "get: unknown resource %q: use services, revisions, replicas, datasets, dataloads, imagecaches or gpus", args[0])
			}
			v, err := list(cmd.Context())
			if err != nil {
				return clientError("get", err)
			}
			if !watch {
				return printOutput(stdio.Out, output, v, printTable)
			}
			return watchList(cmd.Context(), stdio.Out, output, v, list)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "json or yaml for the full objects")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "after the list, print rows again as they change (every 2 s), until interrupted")
	adminFlag(cmd, &admin)
	return cmd
}

func lister[T any](f func(context.Context) (T, error)) func(context.Context) (any, error) {
	return func(ctx context.Context) (any, error) { return f(ctx) }
}

// watchEvery is how often get -w looks again.
var watchEvery = 2 * time.Second

// watchList is get -w: the list as get prints it, then, as kubectl does, only the rows of
// the objects that changed or appeared (for -o json|yaml, each changed list whole), until ctx
// ends. A call that fails is said once and retried.
func watchList(ctx context.Context, w io.Writer, output string, first any, list func(context.Context) (any, error)) error {
	if err := printOutput(w, output, first, printTable); err != nil {
		return err
	}
	last := elements(first)
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		v, err := list(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !failing {
				fmt.Fprintf(w, "get -w: %v (retrying)\n", err)
			}
			failing = true
			continue
		}
		failing = false
		cur := elements(v)
		if slices.Equal(cur, last) {
			continue
		}
		if output != "" {
			if err := printOutput(w, output, v, printTable); err != nil {
				return err
			}
		} else {
			// One row per object, in order: print the rows of the objects not seen before.
			var b strings.Builder
			printTable(&b, v)
			rows := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")[1:]
			for i, e := range cur {
				if !slices.Contains(last, e) && i < len(rows) {
					fmt.Fprintln(w, rows[i])
				}
			}
		}
		last = cur
	}
}

// elements is a list's objects, each as its JSON: what -w compares.
func elements(v any) []string {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Slice {
		return nil
	}
	out := make([]string, rv.Len())
	for i := range out {
		b, _ := json.Marshal(rv.Index(i).Interface())
		out[i] = string(b)
	}
	return out
}

// checkOutput refuses an -o other than json or yaml (or none).
func checkOutput(name, output string) error {
	if output != "" && output != "json" && output != "yaml" {
		return fail(ExitUsage, "%s: -o %q: must be json, yaml or empty", name, output)
	}
	return nil
}

// printOutput writes v as indented JSON for -o json, else as table prints it.
func printOutput[T any](w io.Writer, output string, v T, table func(io.Writer, T)) error {
	switch output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	table(w, v)
	return nil
}

func printTable(w io.Writer, v any) {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	defer tw.Flush()
	switch rows := v.(type) {
	case []adminapi.ServiceView:
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tURL\tLATEST\tREADY\tREASON")
		for _, s := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Namespace, s.Name, s.URL, dash(s.LatestCreated), s.Ready, dash(s.Reason))
		}
	case []adminapi.RevisionView:
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tSERVICE\tGENERATION\tSTATE\tROUTED\tREADY\tREPLICAS\tDESIRED\tPANIC\tREASON")
		for _, r := range rows {
			desired, panic := "-", "-"
			if r.Decision != nil {
				desired, panic = fmt.Sprint(r.Decision.Desired), fmt.Sprint(r.Decision.Panic)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\t%s\t%d/%d\t%s\t%s\t%s\n", r.Namespace, r.Name, r.Service, r.Generation,
				r.State, r.Routed, r.Ready, r.ReadyReplicas, r.RunningReplicas, desired, panic, dash(r.Reason))
		}
	case []adminapi.DatasetView:
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tPHASE\tCACHED\tTOTAL\tFILES\tRATE\tETA\tLEVEL\tMODE\tHOLDERS\tMESSAGE")
		for _, d := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\t%d\t%s\n", d.Namespace, d.Name, d.Phase,
				adminapi.Bytes(d.Bytes), adminapi.Bytes(d.Total), d.FilesDone, d.Files, rateOf(d.Rate), etaOf(d.ETASeconds), dash(d.Level), d.Mode, d.Holders, dash(d.Message))
		}
	case []adminapi.DataLoadView:
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tDATASET\tPOLICY\tPHASE\tDURATION\tRUNS\tMESSAGE")
		for _, l := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", l.Namespace, l.Name, l.Dataset, l.Policy, l.Phase, dash(l.Duration), l.Runs, dash(l.Message))
		}
	case []adminapi.GPUView:
		fmt.Fprintln(tw, "INDEX\tNAME\tSOURCE\tTOTAL\tRESERVED\tUSED\tREPLICAS")
		for _, g := range rows {
			used := "-" // declared: never measured
			if g.Source == "nvml" {
				used = adminapi.Bytes(g.Used)
			}
			var reps []string
			for _, r := range g.Replicas {
				reps = append(reps, fmt.Sprintf("%s (%s)", r.Replica, adminapi.Bytes(r.Reserved)))
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\n", g.Index, g.Name, g.Source, adminapi.Bytes(g.Total), adminapi.Bytes(g.Reserved), used, dash(strings.Join(reps, ", ")))
		}
	case []adminapi.ImageCacheView:
		fmt.Fprintln(tw, "NAME\tPHASE\tIMAGES\tREADY\tSIZE\tLIMIT\tMESSAGE")
		for _, c := range rows {
			ready := 0
			for _, im := range c.Images {
				if im.State == "Ready" {
					ready++
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", c.Name, c.Phase, len(c.Images), ready, adminapi.Bytes(c.Size), adminapi.Bytes(c.Limit), dash(c.Message))
		}
	case []adminapi.Replica:
		fmt.Fprintln(tw, "NAME\tREVISION\tSTATE\tPID\tADDRESS\tRESTARTS\tIN-FLIGHT\tAGE")
		for _, r := range rows {
			age := "-"
			if !r.Started.IsZero() {
				age = time.Since(r.Started).Round(time.Second).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%d\t%s\n", r.Name, r.Revision, r.State, r.PID, dash(r.Addr), r.Restarts, r.InFlight, age)
		}
	}
}

func rateOf(bps float64) string {
	if bps <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MB/s", bps/1e6)
}

func etaOf(seconds float64) string {
	if seconds <= 0 {
		return "-"
	}
	return (time.Duration(seconds * float64(time.Second))).Round(time.Second).String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newDescribe(stdio IO) *cobra.Command {
	var admin, namespace, output string
	cmd := &cobra.Command{
		Use:   "describe service|dataset|imagecache NAME",
		Short: "Show a service (revisions, replicas, conditions), a dataset (cache progress) or an imagecache (its images) of a running infera up",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput("describe", output); err != nil {
				return err
			}
			switch kind := strings.TrimSuffix(args[0], "s"); kind {
			case "service", "ksvc":
			case "dataset":
				d, err := newClient(admin).Dataset(cmd.Context(), namespace, args[1])
				if err != nil {
					return clientError("describe", err)
				}
				return printOutput(stdio.Out, output, d, printDataset)
			case "imagecache":
				d, err := newClient(admin).ImageCache(cmd.Context(), args[1])
				if err != nil {
					return clientError("describe", err)
				}
				return printOutput(stdio.Out, output, d, printImageCache)
			default:
				return fail(ExitUsage, "describe: unknown resource %q: use service, dataset or imagecache", args[0])
			}
			d, err := newClient(admin).Describe(cmd.Context(), namespace, args[1])
			if err != nil {
				return clientError("describe", err)
			}
			return printOutput(stdio.Out, output, d, printDescribe)
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", manifest.DefaultNamespace, "namespace")
	cmd.Flags().StringVarP(&output, "output", "o", "", "json or yaml for the full object")
	adminFlag(cmd, &admin)
	return cmd
}

func printDescribe(w io.Writer, d adminapi.ServiceDetail) {
	s := d.Service
	fmt.Fprintf(w, "Name:        %s\nNamespace:   %s\nURL:         %s\nGeneration:  %d\n", s.Name, s.Namespace, s.URL, s.Generation)
	if len(s.Models) > 0 {
		fmt.Fprintf(w, "Models:      %s\n", strings.Join(s.Models, ", "))
	}
	fmt.Fprintf(w, "\nTraffic:\n")
	for _, t := range s.Traffic {
		latest := ""
		if t.LatestRevision {
			latest = " (latestRevision)"
		}
		tag := ""
		if t.Tag != "" {
			tag = fmt.Sprintf("  #%s %s", t.Tag, t.URL)
		}
		fmt.Fprintf(w, "  %3d%%  %s%s%s\n", t.Percent, t.Revision, latest, tag)
	}
	fmt.Fprintf(w, "\nRevisions:\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tIMAGE\tCC\tSTATE\tREADY\tREPLICAS\tDESIRED\tPANIC\tDATASETS\tREASON")
	for _, r := range d.Revisions {
		desired, panic := "-", "-"
		if r.Decision != nil {
			desired, panic = fmt.Sprint(r.Decision.Desired), fmt.Sprint(r.Decision.Panic)
		}
		reason := r.Message
		if r.Reason != "" && r.State != adminapi.StateRunning {
			reason = r.Reason + ": " + r.Message
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%d/%d\t%s\t%s\t%s\t%s\n", r.Name, dash(r.Image), r.ContainerConcurrency, r.State, r.Ready,
			r.ReadyReplicas, r.RunningReplicas, desired, panic, dash(r.DatasetMode), dash(reason))
	}
	tw.Flush()
	for _, r := range d.Revisions {
		if r.Runtime == "" {
			continue
		}
		fmt.Fprintf(w, "  %s runs as a %s (%s)", r.Name, runtimeNoun(r.Runtime), r.RuntimeReason)
		if r.ImageDigest != "" {
			fmt.Fprintf(w, ", image %s", r.ImageDigest)
		}
		fmt.Fprintln(w)
	}
	printColdStarts(w, d.Revisions)
	var events []string
	for _, r := range d.Revisions {
		events = append(events, r.Events...)
	}
	if len(events) > 0 {
		slices.Sort(events) // each begins with its RFC 3339 time
		fmt.Fprintf(w, "\nEvents:\n")
		for _, e := range slices.Compact(events) {
			fmt.Fprintf(w, "  %s\n", e)
		}
	}
	fmt.Fprintf(w, "\nReplicas:\n")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  NAME\tSTATE\tRUNTIME\tPID\tADDRESS\tRESTARTS\tGPU\tUNIT\tIMAGE\tLAST EXIT")
	for _, r := range d.Replicas {
		last := r.LastExit
		if r.Progress != "" {
			last = r.Progress
		}
		if r.Message != "" {
			last = r.Message
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%d\t%s\t%s\t%s\t%s\n", r.Name, r.State, dash(r.Runtime), r.PID, dash(r.Addr), r.Restarts, gpuOf(r), unitOf(r), imageOf(r), dash(last))
	}
	tw.Flush()
	fmt.Fprintf(w, "\nConditions:\n")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  TYPE\tSTATUS\tREASON\tMESSAGE")
	for _, c := range s.Conditions {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", c.Type, c.Status, dash(c.Reason), dash(c.Message))
	}
	tw.Flush()
}

func printDataset(w io.Writer, d adminapi.DatasetView) {
	fmt.Fprintf(w, "Name:        %s\nNamespace:   %s\nPhase:       %s\n", d.Name, d.Namespace, d.Phase)
	if d.Message != "" {
		fmt.Fprintf(w, "Message:     %s\n", d.Message)
	}
	pct := 0.0
	if d.Total > 0 {
		pct = 100 * float64(d.Bytes) / float64(d.Total)
	}
	fmt.Fprintf(w, "Cached:      %s of %s (%.0f%%), %d of %d files\n", adminapi.Bytes(d.Bytes), adminapi.Bytes(d.Total), pct, d.FilesDone, d.Files)
	fmt.Fprintf(w, "Rate:        %s\nETA:         %s\n", rateOf(d.Rate), etaOf(d.ETASeconds))
	fmt.Fprintf(w, "Mode:        %s\n", d.Mode)
	if d.Level != "" {
		fmt.Fprintf(w, "Level:       %s at %s\n", d.Level, d.LevelPath)
	}
	fmt.Fprintf(w, "Path:        %s\nOn disk:     %s\nHolders:     %d\n", dash(d.Path), adminapi.Bytes(d.CachedBytes), d.Holders)
	if d.Attempts > 0 {
		fmt.Fprintf(w, "Attempts:    %d (next retry %s)\n", d.Attempts, d.NextRetry.Format(time.RFC3339))
	}
}

func newLogs(stdio IO) *cobra.Command {
	var admin, namespace, replica string
	cmd := &cobra.Command{
		Use:   "logs SERVICE [--replica NAME]",
		Short: "Print the logs of a service's replicas",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := newClient(admin).Logs(cmd.Context(), namespace, args[0], replica, stdio.Out); err != nil {
				return clientError("logs", err)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", manifest.DefaultNamespace, "namespace")
	cmd.Flags().StringVar(&replica, "replica", "", "one replica's log (see infera get replicas)")
	adminFlag(cmd, &admin)
	return cmd
}

func runtimeNoun(runtime string) string {
	if runtime == "docker" {
		return "container"
	}
	return runtime
}

// imageOf says where a replica's image came from: "from cache", "pulled 1.2s", "present".
func imageOf(r adminapi.Replica) string {
	switch r.ImageSource {
	case "":
		return "-"
	case "cache":
		return "from cache"
	case "pulled":
		return fmt.Sprintf("pulled %.1fs", float64(r.ImagePullMs)/1000)
	}
	return r.ImageSource
}

func printImageCache(w io.Writer, c adminapi.ImageCacheView) {
	fmt.Fprintf(w, "Name:        %s\nPhase:       %s\n", c.Name, c.Phase)
	if c.Message != "" {
		fmt.Fprintf(w, "Message:     %s\n", c.Message)
	}
	fmt.Fprintf(w, "Size:        %s (pulled by infera: %s, imageCacheSize %s)\n\nImages:\n", adminapi.Bytes(c.Size), adminapi.Bytes(c.Owned), adminapi.Bytes(c.Limit))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  IMAGE\tSTATE\tSIZE\tDIGEST\tOWNED\tLAST USED\tREASON")
	for _, im := range c.Images {
		size := adminapi.Bytes(im.Size)
		if im.State == "Pulling" && im.Total > 0 {
			size = adminapi.Bytes(im.Current) + " of " + adminapi.Bytes(im.Total)
		}
		used := "-"
		if !im.LastUsed.IsZero() {
			used = im.LastUsed.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%v\t%s\t%s\n", im.Image, im.State, size, dash(im.Digest), im.Owned, used, dash(im.Reason))
	}
	tw.Flush()
}

// gpuOf is a replica's GPUs and reservation: "0,1 (30.0 GiB)", "-" without.
func gpuOf(r adminapi.Replica) string {
	if len(r.GPUs) == 0 {
		return "-"
	}
	idx := make([]string, len(r.GPUs))
	for i, g := range r.GPUs {
		idx[i] = fmt.Sprint(g)
	}
	return strings.Join(idx, ",") + " (" + adminapi.Bytes(r.GPUMemory) + ")"
}

// unitOf is a replica's ResourcePolicy unit and pool: "1 (local)", "-" when none covers it.
func unitOf(r adminapi.Replica) string {
	if r.Unit < 0 || (r.Unit == 0 && r.Pool == "") {
		return "-"
	}
	return fmt.Sprintf("%d (%s)", r.Unit, r.Pool)
}

// newClient is an admin API client for admin, with the bearer token from $INFERA_TOKEN or the
// default state directory's admin-token when there is one (an up whose admin address is not
// loopback requires it).
func newClient(admin string) *adminapi.Client {
	c := adminapi.NewClient(admin)
	c.Token = adminapi.ClientToken(store.DefaultDir())
	return c
}
