package cli

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/infera-dev/infera/internal/adminapi"
)

// printColdStarts is describe's "Last cold starts" section: for each revision that has had one,
// when its last cold start began, why, the replica started and each phase in the order they
// happen ("-": a phase it did not have).
func printColdStarts(w io.Writer, revs []adminapi.RevisionView) {
	fmt.Fprintf(w, "\nLast cold starts:\n")
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  REVISION\tAT\tTRIGGER\tREPLICA\tDATASET\tPLACEMENT\tIMAGE\tPROCESS START\tREADINESS\tFIRST BYTE\tTOTAL")
	for _, r := range revs {
		c := r.LastColdStart
		if c == nil {
			continue
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, c.At.Format(time.RFC3339), c.Trigger, dash(c.Replica),
			optMs(c.DatasetMs), ms(c.PlacementMs), optMs(c.ImageMs), ms(c.ProcessStartMs), ms(c.ReadinessMs), optMs(c.FirstByteMs), ms(c.TotalMs))
	}
	tw.Flush()
}

// ms is a duration in milliseconds as Go writes durations, to 10 us below a second and to
// 1 ms above: "1.23ms", "4.5s".
func ms(v float64) string {
	d := time.Duration(v * float64(time.Millisecond))
	if d < time.Second {
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}

func optMs(v *float64) string {
	if v == nil {
		return "-"
	}
	return ms(*v)
}
