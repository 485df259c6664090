package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Version is set at link time (-ldflags "-X github.com/infera-dev/infera/internal/cli.Version=v1.2.3").
var Version = "dev"

func newVersion(stdio IO) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print infera's version and the Knative API it implements",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			knative := "unknown"
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, m := range bi.Deps {
					if m.Path == "knative.dev/serving" {
						knative = m.Version
					}
				}
			}
			fmt.Fprintf(stdio.Out, "infera %s (%s, %s/%s)\nknative.dev/serving %s API: serving.knative.dev/v1\n",
				Version, runtime.Version(), runtime.GOOS, runtime.GOARCH, knative)
			return nil
		},
	}
}
