// Package cli is infera's command tree. Each command parses its flags and calls the packages
// that do the work; main only wires signals and exits with the code a command returns.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// Exit codes, shared by every command.
const (
	ExitOK       = 0
	ExitFailure  = 1 // the command ran and found a problem (invalid manifests, a failed request)
	ExitUsage    = 2 // bad flags or arguments, or a capability that is not built yet
	exitInternal = 3
)

// exitError carries an exit code through cobra; its message is printed once, by Main.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func fail(code int, format string, args ...any) error {
	return &exitError{code: code, msg: fmt.Sprintf(format, args...)}
}

// silent reports an exit code whose explanation the command already printed.
func silent(code int) error { return &exitError{code: code} }

// IO is where commands read and write; tests pass buffers.
type IO struct {
	In          io.Reader
	Out, ErrOut io.Writer
}

// Main runs the command line and returns the process exit code.
func Main(ctx context.Context, args []string, stdio IO) int {
	root := NewRoot(stdio)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.msg != "" {
			fmt.Fprintln(stdio.ErrOut, "infera:", ee.msg)
		}
		return ee.code
	}
	// cobra's own errors: unknown command or flag, wrong number of arguments.
	fmt.Fprintln(stdio.ErrOut, "infera:", err)
	return ExitUsage
}

// NewRoot builds the whole command tree.
func NewRoot(stdio IO) *cobra.Command {
	root := &cobra.Command{
		Use:   "infera",
		Short: "Serverless AI inference on one machine, from Knative manifests",
		Long: `infera runs AI model inference services the serverless way, as one binary on one machine:
Knative serving.knative.dev/v1 Service manifests, scale-to-zero and concurrency autoscaling,
models loaded from external storage through a local cache (Fluid Datasets), shared GPUs,
request logs and Prometheus metrics. The same manifests deploy to Knative on Kubernetes.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdio.In)
	root.SetOut(stdio.Out)
	root.SetErr(stdio.ErrOut)
	root.AddCommand(
		newValidate(stdio),
		newVersion(stdio),
		newUp(stdio),
		newApply(stdio),
		newDelete(stdio),
		newGet(stdio),
		newDescribe(stdio),
		newLogs(stdio),
		newModelServer(stdio),
		newSimulate(stdio),
		notYet("render", "Render manifests as Kubernetes objects for Knative and Fluid", 0, "deploying to a cluster"),
		notYet("deploy", "Apply manifests to a Kubernetes cluster with Knative and Fluid", 0, "deploying to a cluster"),
	)
	return root
}

// notYet is a command whose capability lands with a later issue. It exists so the command tree
// is the whole contract, says so in its help, and exits 2 without pretending to work.
func notYet(name, short string, issue int, what string) *cobra.Command {
	when := fmt.Sprintf("with issue #%d (%s)", issue, what)
	if issue == 0 {
		when = fmt.Sprintf("with %s, a later issue", what)
	}
	return &cobra.Command{
		Use:                name,
		Short:              short + " [not available yet]",
		Long:               fmt.Sprintf("%s.\n\nNot available yet: this command lands %s. It exits with status 2.", short, when),
		DisableFlagParsing: true,
		RunE: func(*cobra.Command, []string) error {
			return fail(ExitUsage, "%s: not available yet: lands %s", name, when)
		},
	}
}

func stdinOr(r io.Reader) io.Reader {
	if r == nil {
		return os.Stdin
	}
	return r
}
