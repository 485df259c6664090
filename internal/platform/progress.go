package platform

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/infera-dev/infera/internal/adminapi"
	"github.com/infera-dev/infera/internal/clock"
)

// progress reports the model cache's fetches on up's output while any runs: on a terminal, one
// bar per fetching dataset redrawn in place every second; otherwise a plain line per fetching
// dataset every plainEvery. Either way a line when a dataset becomes Ready or Failed.
type progress struct {
	w          io.Writer
	tty        bool
	clock      clock.Clock
	list       func() []adminapi.DatasetView
	plainEvery time.Duration

	phase     map[string]string // last phase seen, by namespace/name
	drawn     int               // bar lines on screen (tty)
	lastPlain time.Time
}

func (p *progress) run(ctx context.Context) error {
	t := p.clock.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C():
			p.step(now)
		}
	}
}

// step draws one frame.
func (p *progress) step(now time.Time) {
	if p.phase == nil {
		p.phase = map[string]string{}
	}
	var fetching []adminapi.DatasetView
	var done []string
	for _, d := range p.list() {
		key := d.Namespace + "/" + d.Name
		old, seen := p.phase[key]
		p.phase[key] = d.Phase
		switch {
		case d.Phase == "Fetching" || (d.Phase == "Pending" && d.Total > 0):
			fetching = append(fetching, d)
		case seen && old != d.Phase && (d.Phase == "Ready" || d.Phase == "Failed"):
			if d.Phase == "Ready" {
				done = append(done, fmt.Sprintf("dataset %s: ready, %s cached", key, adminapi.Bytes(d.Bytes)))
			} else {
				done = append(done, fmt.Sprintf("dataset %s: failed: %s", key, d.Message))
			}
		}
	}
	if p.tty {
		if p.drawn > 0 { // back to the first bar line, and clear what was drawn
			fmt.Fprintf(p.w, "\x1b[%dA\x1b[J", p.drawn)
		}
		for _, l := range done {
			fmt.Fprintln(p.w, l)
		}
		for _, d := range fetching {
			fmt.Fprintln(p.w, bar(d, 30))
		}
		p.drawn = len(fetching)
		return
	}
	for _, l := range done {
		fmt.Fprintln(p.w, l)
	}
	if len(fetching) > 0 && (p.lastPlain.IsZero() || now.Sub(p.lastPlain) >= p.plainEvery) {
		p.lastPlain = now
		for _, d := range fetching {
			fmt.Fprintln(p.w, line(d))
		}
	}
}

func fraction(d adminapi.DatasetView) float64 {
	if d.Total <= 0 {
		return 0
	}
	return min(1, float64(d.Bytes)/float64(d.Total))
}

// line is "dataset default/x: 1.2Gi of 3.4Gi (35%), 210.0 MB/s, ETA 10s".
func line(d adminapi.DatasetView) string {
	s := fmt.Sprintf("dataset %s/%s: %s of %s (%.0f%%)", d.Namespace, d.Name, adminapi.Bytes(d.Bytes), adminapi.Bytes(d.Total), 100*fraction(d))
	if d.Rate > 0 {
		s += fmt.Sprintf(", %.1f MB/s", d.Rate/1e6)
	}
	if d.ETASeconds > 0 {
		s += ", ETA " + (time.Duration(d.ETASeconds * float64(time.Second))).Round(time.Second).String()
	}
	return s
}

// bar is line with a bar of width cells in front.
func bar(d adminapi.DatasetView, width int) string {
	n := int(fraction(d) * float64(width))
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "] " + line(d)
}

// FollowDatasets shows the progress of the named datasets ("namespace/name") as up does (bars
// on a terminal, plain lines every 10 s otherwise) until each is Ready or Failed, or ctx ends.
// `infera apply` uses it for the Datasets it applied. It returns an error naming the datasets
// that failed.
func FollowDatasets(ctx context.Context, w io.Writer, tty bool, c clock.Clock, list func(context.Context) ([]adminapi.DatasetView, error), keys []string) error {
	want := map[string]bool{}
	for _, k := range keys {
		want[k] = true
	}
	var listErr error
	var last []adminapi.DatasetView
	p := &progress{w: w, tty: tty, clock: clock.Or(c), plainEvery: 10 * time.Second, list: func() []adminapi.DatasetView {
		all, err := list(ctx)
		if err != nil {
			listErr = err
			return nil
		}
		last = last[:0]
		for _, d := range all {
			if want[d.Namespace+"/"+d.Name] {
				last = append(last, d)
			}
		}
		return last
	}}
	t := p.clock.NewTicker(time.Second)
	defer t.Stop()
	now := p.clock.Now()
	for {
		p.step(now)
		if listErr != nil {
			return listErr
		}
		done, failed := 0, []string(nil)
		for _, d := range last {
			switch d.Phase {
			case "Ready":
				done++
			case "Failed":
				done++
				failed = append(failed, d.Namespace+"/"+d.Name+": "+d.Message)
			}
		}
		if len(last) == len(keys) && done == len(keys) {
			if len(failed) > 0 {
				return fmt.Errorf("dataset failed: %s", strings.Join(failed, "; "))
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return nil // stop following; the fetch goes on
		case now = <-t.C():
		}
	}
}
