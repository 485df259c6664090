package coldstart

import (
	"bytes"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/infera-dev/infera/internal/workload"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// at is t0 plus ms milliseconds; a negative ms is the zero time (did not happen).
func at(ms int) time.Time {
	if ms < 0 {
		return time.Time{}
	}
	return t0.Add(time.Duration(ms) * time.Millisecond)
}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func TestSpans(t *testing.T) {
	tests := []struct {
		name string
		cs   ColdStart
		want []Span
	}{
		{
			name: "scale from zero",
			cs:   ColdStart{Demand: at(0), Created: at(2), Started: at(5), Ready: at(105), FirstByte: at(108)},
			want: []Span{{Placement, ms(2)}, {ProcessStart, ms(3)}, {Readiness, ms(100)}, {FirstByte, ms(3)}},
		},
		{
			name: "a container whose image was pulled",
			cs:   ColdStart{Demand: at(0), Created: at(2), ImageReady: at(1502), Started: at(1700), Ready: at(1750), FirstByte: at(1751)},
			want: []Span{{Placement, ms(2)}, {Image, ms(1500)}, {ProcessStart, ms(198)}, {Readiness, ms(50)}, {FirstByte, ms(1)}},
		},
		{
			name: "first start after a dataset wait, no request held",
			cs:   ColdStart{DatasetWait: at(0), Demand: at(3000), Created: at(3000), Started: at(3004), Ready: at(3010)},
			want: []Span{{Dataset, ms(3000)}, {Placement, 0}, {ProcessStart, ms(4)}, {Readiness, ms(6)}},
		},
		{
			name: "instants out of order count as zero and never move the timeline back",
			cs:   ColdStart{Demand: at(10), Created: at(5), Started: at(12), Ready: at(11), FirstByte: at(20)},
			want: []Span{{Placement, 0}, {ProcessStart, ms(2)}, {Readiness, 0}, {FirstByte, ms(8)}},
		},
		{
			name: "no process start reported",
			cs:   ColdStart{Demand: at(0), Created: at(1), Ready: at(9)},
			want: []Span{{Placement, ms(1)}, {ProcessStart, 0}, {Readiness, ms(8)}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.cs.Spans()
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Spans = %v, want %v", got, tt.want)
			}
			var sum time.Duration
			for _, s := range tt.want {
				sum += s.Duration
				if d, ok := tt.cs.Duration(s.Phase); !ok || d != s.Duration {
					t.Errorf("Duration(%s) = %v %v, want %v", s.Phase, d, ok, s.Duration)
				}
			}
			if got := tt.cs.Total(); got != sum {
				t.Errorf("Total = %v, want the sum of the spans %v", got, sum)
			}
			if _, ok := tt.cs.Duration(Dataset); ok != !tt.cs.DatasetWait.IsZero() {
				t.Errorf("dataset phase present = %v with DatasetWait %v", ok, tt.cs.DatasetWait)
			}
		})
	}
}

var llm = workload.Revision{ID: "default/llm-00001", Namespace: "default", Service: "llm", Configuration: "llm", Name: "llm-00001"}

// event is one report to the tracker.
type event func(*Tracker)

func added(atMs, replicas, waitMs int) event {
	return func(t *Tracker) { t.Added(llm, at(atMs), replicas, at(waitMs)) }
}
func demand(atMs int) event { return func(t *Tracker) { t.Demand(llm.ID, at(atMs)) } }
func decided(n int) event   { return func(t *Tracker) { t.Decided(llm.ID, n) } }
func firstByte(atMs int) event {
	return func(t *Tracker) { t.FirstByte(llm.ID, "llm-00001-aaaaa", at(atMs)) }
}
func removed() event { return func(t *Tracker) { t.Remove(llm.ID) } }

// replica reports replica name created, started and ready (-1: not) at those milliseconds.
func replica(name string, created, started, ready int) event {
	return func(t *Tracker) {
		t.Replica(Replica{Revision: llm.ID, Name: name, Created: at(created), Started: at(started), Ready: at(ready)})
	}
}

func TestTracker(t *testing.T) {
	tests := []struct {
		name    string
		events  []event
		want    *ColdStart // the last finished; nil: none
		records int        // cold starts recorded (log lines)
	}{
		{
			name: "scale from zero ends at the held request's first byte",
			events: []event{added(0, 0, -1), demand(100), replica("a", 102, 105, -1), replica("a", 102, 105, 300),
				firstByte(303)},
			want: &ColdStart{Trigger: TriggerRequest, Replica: "a", Demand: at(100), Created: at(102), Started: at(105),
				Ready: at(300), FirstByte: at(303)},
			records: 1,
		},
		{
			name:   "first start after a dataset wait ends at Ready when no request waits",
			events: []event{added(5000, 1, 1000), replica("a", 5001, 5002, 5100), firstByte(6000)},
			want: &ColdStart{Trigger: TriggerFirstStart, Replica: "a", DatasetWait: at(1000), Demand: at(5000),
				Created: at(5001), Started: at(5002), Ready: at(5100)},
			records: 1,
		},
		{
			name:   "a request held during a first start makes it end at the first byte",
			events: []event{added(0, 1, -1), demand(10), replica("a", 1, 2, 50), firstByte(52)},
			want: &ColdStart{Trigger: TriggerFirstStart, Replica: "a", Demand: at(0), Created: at(1), Started: at(2),
				Ready: at(50), FirstByte: at(52)},
			records: 1,
		},
		{
			name:   "a first byte reported before the replica's Ready waits for it",
			events: []event{added(0, 0, -1), demand(0), firstByte(40), replica("a", 1, 2, 39)},
			want: &ColdStart{Trigger: TriggerRequest, Replica: "a", Demand: at(0), Created: at(1), Started: at(2),
				Ready: at(39), FirstByte: at(40)},
			records: 1,
		},
		{
			name:    "a revision added at zero with no request has had no cold start",
			events:  []event{added(0, 0, 0), replica("a", 1, 2, 3)},
			records: 0,
		},
		{
			name:    "a replica there before the request becoming Ready is no cold start",
			events:  []event{added(0, 0, -1), demand(100), replica("old", 50, 60, 200), firstByte(201)},
			records: 0,
		},
		{
			name: "only the first replica to become Ready counts",
			events: []event{added(0, 0, -1), demand(0), replica("a", 1, 2, 10), replica("b", 1, 3, 12),
				firstByte(11), firstByte(13)},
			want: &ColdStart{Trigger: TriggerRequest, Replica: "a", Demand: at(0), Created: at(1), Started: at(2),
				Ready: at(10), FirstByte: at(11)},
			records: 1,
		},
		{
			name: "scaled to zero before Ready: dropped, and the next request begins afresh",
			events: []event{added(0, 0, -1), demand(0), replica("a", 1, 2, -1), decided(0),
				demand(10000), replica("b", 10001, 10002, 10010), firstByte(10011)},
			want: &ColdStart{Trigger: TriggerRequest, Replica: "b", Demand: at(10000), Created: at(10001),
				Started: at(10002), Ready: at(10010), FirstByte: at(10011)},
			records: 1,
		},
		{
			name:   "held requests ended without a response: finished at scale to zero without a first byte",
			events: []event{added(0, 0, -1), demand(0), replica("a", 1, 2, 10), decided(1), decided(0)},
			want: &ColdStart{Trigger: TriggerRequest, Replica: "a", Demand: at(0), Created: at(1), Started: at(2),
				Ready: at(10)},
			records: 1,
		},
		{
			name: "a new poke after the replicas went away finishes the one without a first byte",
			events: []event{added(0, 0, -1), demand(0), replica("a", 1, 2, 10), demand(500),
				replica("b", 501, 502, 510), firstByte(511)},
			want: &ColdStart{Trigger: TriggerRequest, Replica: "b", Demand: at(500), Created: at(501), Started: at(502),
				Ready: at(510), FirstByte: at(511)},
			records: 2,
		},
		{
			name: "a second scale from zero replaces the last",
			events: []event{added(0, 0, -1), demand(0), replica("a", 1, 2, 10), firstByte(11), decided(0),
				demand(1000), replica("b", 1001, 1002, 1020), firstByte(1021)},
			want: &ColdStart{Trigger: TriggerRequest, Replica: "b", Demand: at(1000), Created: at(1001),
				Started: at(1002), Ready: at(1020), FirstByte: at(1021)},
			records: 2,
		},
		{
			name:    "reports for a revision not added are ignored",
			events:  []event{demand(0), replica("a", 1, 2, 10), firstByte(11)},
			records: 0,
		},
		{
			name:    "removed: forgotten, and reports after it ignored",
			events:  []event{added(0, 1, -1), replica("a", 1, 2, 10), removed(), demand(20), replica("b", 21, 22, 30)},
			records: 1,
		},
		{
			name: "added again after a remove is a first start again",
			events: []event{added(0, 1, -1), replica("a", 1, 2, 10), removed(), added(100, 1, -1),
				replica("b", 101, 102, 110)},
			want: &ColdStart{Trigger: TriggerFirstStart, Replica: "b", Demand: at(100), Created: at(101),
				Started: at(102), Ready: at(110)},
			records: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log bytes.Buffer
			tr, err := New(Config{Logger: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range tt.events {
				ev(tr)
			}
			got, ok := tr.Last(llm.ID)
			if tt.want == nil {
				if ok {
					t.Errorf("Last = %+v, want none", got)
				}
			} else {
				want := *tt.want
				want.Revision, want.Service = llm.ID, "default/llm"
				if !ok || got != want {
					t.Errorf("Last =\n %+v %v\nwant\n %+v", got, ok, want)
				}
			}
			if n := strings.Count(log.String(), `msg="cold start"`); n != tt.records {
				t.Errorf("%d cold starts logged, want %d:\n%s", n, tt.records, log.String())
			}
		})
	}
}

// TestRecorded: a finished cold start is one debug line with every phase it had, under the
// key vocabulary, and one histogram sample per phase with Knative's revision labels.
func TestRecorded(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	var log bytes.Buffer
	tr, err := New(Config{Registerer: reg, Logger: slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []event{added(1000, 1, 0), demand(1000), replica("llm-00001-aaaaa", 1001, 1003, 1400), firstByte(1402)} {
		ev(tr)
	}
	line := strings.TrimSpace(log.String())
	for _, want := range []string{`level=DEBUG msg="cold start" service=default/llm revision=default/llm-00001 replica=llm-00001-aaaaa trigger=first-start`,
		"dataset=1s", "placement=1ms", "process_start=2ms", "readiness=397ms", "first_byte=2ms", "total=1.402s"} {
		if !strings.Contains(line, want) {
			t.Errorf("log line lacks %q:\n%s", want, line)
		}
	}
	if strings.Count(line, "\n") != 0 {
		t.Errorf("more than one line:\n%s", line)
	}

	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*dto.Histogram{}
	for _, f := range fams {
		if f.GetName() != MetricName {
			continue
		}
		for _, m := range f.Metric {
			lv := map[string]string{}
			for _, l := range m.Label {
				lv[l.GetName()] = l.GetValue()
			}
			if lv["namespace_name"] != "default" || lv["service_name"] != "llm" || lv["configuration_name"] != "llm" || lv["revision_name"] != "llm-00001" {
				t.Errorf("labels %v", lv)
			}
			got[lv["phase"]] = m.Histogram
		}
	}
	wantSec := map[Phase]float64{Dataset: 1, Placement: 0.001, ProcessStart: 0.002, Readiness: 0.397, FirstByte: 0.002}
	for p, sec := range wantSec {
		h := got[string(p)]
		if h == nil || h.GetSampleCount() != 1 || abs(h.GetSampleSum()-sec) > 1e-9 {
			t.Errorf("phase %s: %v, want one sample of %gs", p, h, sec)
		}
	}
	if len(got) != len(wantSec) {
		t.Errorf("phases %v, want %v", got, wantSec)
	}
	if h := got[string(Placement)]; h != nil {
		if b := h.Bucket; len(b) != len(Buckets) || b[0].GetUpperBound() != 0.001 || b[len(b)-1].GetUpperBound() != 600 {
			t.Errorf("buckets %v, want 1 ms .. 10 min", b)
		}
	}

	// A second tracker on the same registry is refused, not shared by accident.
	if _, err := New(Config{Registerer: reg}); err == nil {
		t.Error("a second tracker registered on the same registry")
	}
}

func TestBucketsAscend(t *testing.T) {
	if !slices.IsSorted(Buckets) || Buckets[0] != 0.001 || Buckets[len(Buckets)-1] != 600 {
		t.Fatalf("buckets %v: want ascending from 1 ms to 10 min", Buckets)
	}
}

// TestConcurrentReports: reporters on their own goroutines (the race detector checks the
// locking), and a nil Tracker takes every report.
func TestConcurrentReports(t *testing.T) {
	tr, err := New(Config{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	tr.Added(llm, at(0), 0, time.Time{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 100 {
				base := i*100000 + j*100
				tr.Demand(llm.ID, at(base))
				tr.Replica(Replica{Revision: llm.ID, Name: "r", Created: at(base + 1), Started: at(base + 2), Ready: at(base + 3)})
				tr.FirstByte(llm.ID, "r", at(base+4))
				tr.Decided(llm.ID, 0)
				tr.Last(llm.ID)
			}
		})
	}
	wg.Wait()

	var none *Tracker
	none.Added(llm, at(0), 1, time.Time{})
	none.Demand(llm.ID, at(0))
	none.Replica(Replica{Revision: llm.ID, Ready: at(1)})
	none.FirstByte(llm.ID, "r", at(2))
	none.Decided(llm.ID, 0)
	none.Remove(llm.ID)
	if _, ok := none.Last(llm.ID); ok {
		t.Error("a nil tracker has a last cold start")
	}
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}
