package cli

import "github.com/spf13/cobra"

// newSimulate replays a trace through the autoscaler (owned by the autoscaler work).
func newSimulate(IO) *cobra.Command {
	return notYet("simulate", "Replay a request trace through the autoscaler for what-if tuning", 4, "the KPA autoscaler")
}
