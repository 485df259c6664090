package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/infera-dev/infera/internal/modelserver"
)

// maxModelSize bounds `model-server init --size`: a typo such as 256Gi for
// 256Mi should not fill the disk.
const maxModelSize = 64 << 30

// newModelServer is `infera model-server`: the reference model server, and
// `init` to write the synthetic model it serves.
func newModelServer(stdio IO) *cobra.Command {
	var (
		dir             string
		port            int
		names           []string
		parallelism     int
		maxTokens       int
		loadParallelism int
		mmap            bool
		verify          bool
		drainTimeout    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "model-server --model-dir DIR [--port N] [--name NAME]... [--parallelism N] [--max-tokens N] [--load-parallelism N] [--mmap] [--verify]",
		Short: "Run infera's reference model server (synthetic weights)",
		Long: `model-server serves one model directory, written by "infera model-server init", over
OpenAI's API (/v1/models, /v1/completions, /v1/chat/completions, streaming or not) and KServe's
v2 open inference protocol (/v2/health/*, /v2/models/{model}[/ready|/infer]), with /health
answering 503 while the model loads or the server drains and 200 when it is ready.

The model is synthetic: its weights are deterministic pseudo-random numbers, not a trained
model, and the text it writes is word salad. But loading reads every weight and every token is
a real pass over all of them, so load time, latency per token and memory behave like a real
model of that size. Decoding is greedy: the same prompt gives the same text.

It serves the model under every --name, the first the primary (the one responses use when a
request names no model), the rest aliases: each is accepted in a request's "model", listed by
GET /v1/models and served at /v2/models/{name}. $K_SERVICE (the Knative service's name, which
infera's gateway routes "model" by) is always served: with no --name as the primary, with
config.json's name as an alias, else after the --names. Outside Knative and with no --name it
serves config.json's name. The gateway also routes the names in a Service's infera.dev/models
annotation; give them as --name too for the server to accept them.

It loads the weights with --load-parallelism large reads in flight at once (header first), into
memory of its own (the model's size, per replica), and logs the bytes, seconds and MB/s it took
(also in /v2/models/{name}'s parameters). --mmap maps the file instead: replicas of a model on
one machine then share one copy in the page cache, but a cold load pages in through faults, many
times slower over FUSE and network mounts.

It listens on $PORT (Knative's runtime contract), or --port, or 8080, on all interfaces. At most
--parallelism requests generate at once; the rest wait in arrival order. Logs are JSON lines on
standard error. On SIGTERM or SIGINT it reports not ready at once, finishes the requests in
flight (for at most --drain-timeout), and exits 0.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return fail(ExitUsage, "model-server: --model-dir is required (write a model first with: infera model-server init DIR)")
			}
			addrPort, err := listenPort(cmd.Flags().Changed("port"), port)
			if err != nil {
				return fail(ExitUsage, "model-server: %v", err)
			}
			if parallelism < 1 || maxTokens < 1 || loadParallelism < 1 || drainTimeout <= 0 {
				return fail(ExitUsage, "model-server: --parallelism (%d), --max-tokens (%d), --load-parallelism (%d) and --drain-timeout (%v) must be positive",
					parallelism, maxTokens, loadParallelism, drainTimeout)
			}
			if slices.Contains(names, "") {
				return fail(ExitUsage, "model-server: --name must not be empty")
			}
			cfg := modelserver.Config{
				ModelDir:        dir,
				Addr:            net.JoinHostPort("", strconv.Itoa(addrPort)),
				Names:           names,
				Service:         os.Getenv("K_SERVICE"),
				Parallelism:     parallelism,
				MaxTokens:       maxTokens,
				LoadParallelism: loadParallelism,
				Mmap:            mmap,
				Verify:          verify,
				DrainTimeout:    drainTimeout,
				Logger:          slog.New(slog.NewJSONHandler(stdio.ErrOut, nil)),
			}
			if err := modelserver.Run(cmd.Context(), cfg, nil); err != nil {
				code := ExitFailure
				if errors.Is(err, modelserver.ErrInvalidModel) || errors.Is(err, modelserver.ErrChecksum) {
					err = fmt.Errorf("%w\n(write a fresh model with: infera model-server init %s)", err, dir)
				}
				return fail(code, "model-server: %v", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "model-dir", "", "model directory written by \"infera model-server init\" (required)")
	f.IntVar(&port, "port", 8080, "port to listen on; overrides $PORT")
	f.StringArrayVar(&names, "name", nil, "served model name; repeat for aliases, the first is the primary ($K_SERVICE is always served; default: it and the name in config.json)")
	f.IntVar(&parallelism, "parallelism", 1, "requests that generate at once; more wait in FIFO order")
	f.IntVar(&maxTokens, "max-tokens", modelserver.DefaultMaxTokens, "largest max_tokens a request may ask for")
	f.IntVar(&loadParallelism, "load-parallelism", modelserver.DefaultLoadParallelism, "reads of the weights in flight at once while loading")
	f.BoolVar(&mmap, "mmap", false, "map the weights instead of reading them: shared with other replicas through the page cache, slow to load over FUSE and network mounts")
	f.BoolVar(&verify, "verify", false, "check the weights' sha256 against config.json before becoming ready")
	f.DurationVar(&drainTimeout, "drain-timeout", modelserver.DefaultDrainTimeout, "bound on finishing requests in flight at shutdown")
	cmd.AddCommand(newModelServerInit(stdio))
	return cmd
}

// listenPort is --port if given, else $PORT, else 8080.
func listenPort(flagSet bool, flagPort int) (int, error) {
	p, from := flagPort, "--port"
	if !flagSet {
		if env, ok := os.LookupEnv("PORT"); ok && env != "" {
			n, err := strconv.Atoi(env)
			if err != nil {
				return 0, fmt.Errorf("$PORT %q is not a port number", env)
			}
			p, from = n, "$PORT"
		}
	}
	if p < 0 || p > 65535 {
		return 0, fmt.Errorf("%s %d is out of range 0..65535", from, p)
	}
	return p, nil
}

func newModelServerInit(stdio IO) *cobra.Command {
	var (
		size string
		name string
		seed uint64
	)
	cmd := &cobra.Command{
		Use:   "init DIR [--size 256MiB] [--name NAME] [--seed N]",
		Short: "Write a synthetic model (random weights, not a trained model) to DIR",
		Long: `init writes a model directory that "infera model-server --model-dir DIR" serves: real
safetensors weights (an embedding, square layers and an output projection, float32) of about
--size bytes, a Hugging Face style config.json and a word-level tokenizer.json.

The weights are synthetic: deterministic pseudo-random numbers from --seed, not a trained model.
The same size, seed and name give byte-identical files. A model already in DIR is replaced;
files are written under temporary names and renamed, so an interrupted init leaves nothing that
loads.

--size takes a Kubernetes quantity (256Mi, 1Gi, 64M, 500000000), optionally followed by B
(256MiB, 64MB); at least 512Ki, at most 64Gi.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := parseSize(size)
			if err != nil {
				return fail(ExitUsage, "model-server init: --size %q: %v", size, err)
			}
			start := time.Now()
			info, err := modelserver.Init(args[0], modelserver.InitOptions{Size: n, Seed: seed, Name: name})
			if err != nil {
				return fail(ExitFailure, "model-server init: %v", err)
			}
			fmt.Fprintf(stdio.Out, "Wrote a SYNTHETIC model to %s in %.1fs.\n", info.Dir, time.Since(start).Seconds())
			fmt.Fprintf(stdio.Out, "Its weights are random numbers, not a trained model: it will write word salad.\n\n")
			fmt.Fprint(stdio.Out, info.String())
			fmt.Fprintf(stdio.Out, "\nServe it with:\n  infera model-server --model-dir %s\n", info.Dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&size, "size", "256MiB", "approximate size of the weights, a Kubernetes quantity such as 256Mi, 1Gi or 64M (B suffix allowed)")
	f.StringVar(&name, "name", modelserver.DefaultName, "model name, as the server reports and requests select it")
	f.Uint64Var(&seed, "seed", 0, "seed of the pseudo-random weights")
	return cmd
}

// parseSize reads a byte count written as a Kubernetes quantity, with an
// optional B after it (256MiB, 64MB, 1000B), and checks it is a whole
// number of bytes in [modelserver.MinSize, maxModelSize].
func parseSize(s string) (int64, error) {
	q := strings.TrimSpace(s)
	if rest, ok := strings.CutSuffix(q, "B"); ok && rest != "" && !strings.HasSuffix(rest, "B") {
		q = rest
	}
	qty, err := resource.ParseQuantity(q)
	if err != nil {
		return 0, fmt.Errorf("not a size: want a Kubernetes quantity such as 256Mi, 1Gi or 64M, optionally followed by B")
	}
	if qty.Cmp(*resource.NewQuantity(maxModelSize, resource.BinarySI)) > 0 {
		return 0, fmt.Errorf("%s is above the maximum of %s", qty.String(), humanSize(maxModelSize))
	}
	n := qty.Value() // rounded up to a whole number
	switch {
	case qty.Cmp(*resource.NewQuantity(n, resource.DecimalSI)) != 0:
		return 0, fmt.Errorf("not a whole number of bytes")
	case n < modelserver.MinSize:
		return 0, fmt.Errorf("%d bytes is below the minimum of %s", n, humanSize(modelserver.MinSize))
	case n > maxModelSize:
		return 0, fmt.Errorf("%d bytes is above the maximum of %s", n, humanSize(maxModelSize))
	}
	return n, nil
}

func humanSize(n int64) string {
	return resource.NewQuantity(n, resource.BinarySI).String()
}
