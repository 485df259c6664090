package simulate

import (
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"strconv"
	"text/tabwriter"
)

// RowHeader is the header of the per-tick output.
var RowHeader = []string{
	"t_s", "ready", "stable_concurrency", "panic_concurrency", "stable_rps", "panic_rps",
	"decider_desired", "panic_mode", "desired", "excess_burst_capacity",
}

// Format is an output format.
type Format string

// The output formats.
const (
	CSV   Format = "csv"
	Table Format = "table"
)

// ParseFormat checks an -o value.
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case CSV, Table:
		return f, nil
	}
	return "", fmt.Errorf("simulate: output %q: must be csv or table", s)
}

// num prints v with three decimals; a value that rounds to zero prints as
// 0.000, not -0.000 (running sums can leave -1e-16 behind).
func num(v float64) string {
	r := math.Round(v*1000) / 1000
	if r == 0 {
		r = 0
	}
	return strconv.FormatFloat(r, 'f', 3, 64)
}

func (r Row) fields() []string {
	return []string{
		strconv.Itoa(r.T), strconv.Itoa(r.Ready),
		num(r.StableConcurrency), num(r.PanicConcurrency), num(r.StableRPS), num(r.PanicRPS),
		strconv.Itoa(r.DeciderDesired), strconv.FormatBool(r.Panic), strconv.Itoa(r.Desired),
		strconv.FormatFloat(r.ExcessBurstCapacity, 'f', -1, 64),
	}
}

// summaryFields are the summary's names and values, in order.
func (s Summary) fields() [][2]string {
	return [][2]string{
		{"replica_seconds", num(s.ReplicaSeconds)},
		{"cold_starts", strconv.Itoa(s.ColdStarts)},
		{"queue_wait_p50_s", num(s.WaitP50)},
		{"queue_wait_p95_s", num(s.WaitP95)},
		{"queue_wait_p99_s", num(s.WaitP99)},
		{"max_queue_length", strconv.Itoa(s.MaxQueue)},
		{"cold_start_waits", strconv.Itoa(s.ColdWaits)},
		{"requests", strconv.Itoa(s.Requests)},
		{"unserved", strconv.Itoa(s.Unserved)},
	}
}

// Write prints a run: the rows under RowHeader, then the summary (in CSV, as
// "# name,value" comment lines after a blank line, so that CSV readers that
// skip comments read the rows alone).
func Write(w io.Writer, res Result, f Format) error {
	rows := make([][]string, 0, len(res.Rows)+1)
	rows = append(rows, RowHeader)
	for _, r := range res.Rows {
		rows = append(rows, r.fields())
	}
	if err := writeRows(w, rows, f); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(w); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, kv := range res.Summary.fields() {
		var err error
		if f == CSV {
			_, err = fmt.Fprintf(w, "# %s,%s\n", kv[0], kv[1])
		} else {
			_, err = fmt.Fprintf(tw, "%s\t%s\n", kv[0], kv[1])
		}
		if err != nil {
			return err
		}
	}
	return tw.Flush()
}

func writeRows(w io.Writer, rows [][]string, f Format) error {
	if f == CSV {
		cw := csv.NewWriter(w)
		if err := cw.WriteAll(rows); err != nil {
			return fmt.Errorf("simulate: write: %w", err)
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, r := range rows {
		for _, c := range r {
			if _, err := fmt.Fprint(tw, c, "\t"); err != nil {
				return err
			}
		}
		if _, err := fmt.Fprintln(tw); err != nil {
			return err
		}
	}
	return tw.Flush()
}

// WriteSweep prints one summary row per configuration, in the order given
// (Sweep's: cheapest meeting the budget first).
func WriteSweep(w io.Writer, results []SweepResult, f Format) error {
	if len(results) == 0 {
		return nil
	}
	var header []string
	for _, kv := range results[0].Settings {
		header = append(header, kv[0])
	}
	for _, kv := range results[0].Summary.fields() {
		header = append(header, kv[0])
	}
	header = append(header, "meets_p99_budget")
	rows := [][]string{header}
	for _, r := range results {
		var row []string
		for _, kv := range r.Settings {
			row = append(row, kv[1])
		}
		for _, kv := range r.Summary.fields() {
			row = append(row, kv[1])
		}
		rows = append(rows, append(row, strconv.FormatBool(r.MeetsBudget)))
	}
	return writeRows(w, rows, f)
}
