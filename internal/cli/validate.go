package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/infera-dev/infera/internal/manifest"
)

func newValidate(stdio IO) *cobra.Command {
	var files []string
	var output string
	cmd := &cobra.Command{
		Use:   "validate -f FILE|DIR|- [-f ...]",
		Short: "Decode, default and validate manifests as Knative, Fluid and ACK would",
		Long: `Validate decodes multi-document YAML, applies Knative's defaults and validation (the webhook's
rules, knative.dev/serving v0.50.0) and Fluid's and ACK's rules, and checks references between the
objects (secrets, config maps, claims). Every problem of the whole set is printed at once as
  file:line:col: Kind namespace/name: field.path: message
Warnings are printed too but do not fail the set. Exit status: 0 valid, 1 invalid, 2 usage.

Directories are walked for .yaml and .yml files; "-" reads standard input.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return fail(ExitUsage, "validate: no input: pass -f FILE, -f DIR or -f -")
			}
			if output != "" && output != "yaml" && output != "json" {
				return fail(ExitUsage, "validate: -o %q: must be yaml or json", output)
			}
			sources, err := manifest.ReadSources(files, stdinOr(stdio.In))
			if err != nil {
				return fail(ExitFailure, "validate: %v", err)
			}
			set := manifest.Load(cmd.Context(), sources, manifest.Options{})
			printProblems(stdio.ErrOut, set.Problems)
			errs, warns := len(set.Problems.Errors()), len(set.Problems.Warnings())
			if errs > 0 {
				fmt.Fprintf(stdio.ErrOut, "%d error(s), %d warning(s): nothing is valid until every error is fixed\n", errs, warns)
				return silent(ExitFailure)
			}
			if output != "" {
				if err := manifest.Print(stdio.Out, set.Documents, output); err != nil {
					return fail(exitInternal, "validate: %v", err)
				}
			}
			fmt.Fprintf(stdio.ErrOut, "%d object(s) valid in %d file(s), %d warning(s)\n", len(set.Documents), len(sources), warns)
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "manifest file, directory or - for stdin (repeatable)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "print the defaulted objects: yaml or json")
	return cmd
}

func printProblems(w io.Writer, ps manifest.Problems) {
	for _, p := range ps {
		fmt.Fprintln(w, p.String())
	}
}
