package cli

import "github.com/spf13/cobra"

// newModelServer is the reference model server command (owned by the model-server work).
func newModelServer(IO) *cobra.Command {
	return notYet("model-server", "Run infera's reference model server (synthetic weights)", 3, "the serving path")
}
