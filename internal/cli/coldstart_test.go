package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/adminapi"
)

func TestDescribeShowsColdStarts(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	d := adminapi.ServiceDetail{
		Service: adminapi.ServiceView{Namespace: "default", Name: "llm"},
		Revisions: []adminapi.RevisionView{
			{Name: "llm-00003", State: adminapi.StateRunning},
			{Name: "llm-00002", State: adminapi.StateRunning, LastColdStart: &adminapi.ColdStartView{
				At: at, Trigger: "request", Replica: "llm-00002-x7k2q",
				PlacementMs: 0.4, ImageMs: f(1800), ProcessStartMs: 3.21, ReadinessMs: 1250, FirstByteMs: f(1.5), TotalMs: 1255.11,
			}},
			{Name: "llm-00001", State: adminapi.StateRetired, LastColdStart: &adminapi.ColdStartView{
				At: at, Trigger: "first-start", Replica: "llm-00001-bbbbb",
				DatasetMs: f(62000), PlacementMs: 0, ProcessStartMs: 2, ReadinessMs: 8, TotalMs: 62010,
			}},
		},
	}
	var out bytes.Buffer
	printDescribe(&out, d)
	section := out.String()[strings.Index(out.String(), "Last cold starts:"):]
	section = section[:strings.Index(section, "\nReplicas:")]
	lines := strings.Split(strings.TrimSpace(section), "\n")
	tests := []struct {
		name string
		line int
		want []string
	}{
		{"header in phase order", 1, []string{"REVISION", "AT", "TRIGGER", "REPLICA", "DATASET", "PLACEMENT", "IMAGE", "PROCESS START", "READINESS", "FIRST BYTE", "TOTAL"}},
		{"scale from zero", 2, []string{"llm-00002", "2026-01-02T03:04:05Z", "request", "llm-00002-x7k2q", "-", "400µs", "1.8s", "3.21ms", "1.25s", "1.5ms", "1.255s"}},
		{"first start after a dataset wait", 3, []string{"llm-00001", "2026-01-02T03:04:05Z", "first-start", "llm-00001-bbbbb", "1m2s", "0s", "-", "2ms", "8ms", "-", "1m2.01s"}},
	}
	if len(lines) != 4 {
		t.Fatalf("section has %d lines, want a title, a header and a row per revision with a cold start:\n%s", len(lines), section)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fields := strings.Join(strings.Fields(lines[tt.line]), " ")
			if got, want := fields, strings.Join(tt.want, " "); got != want {
				t.Errorf("line %d:\n got  %s\n want %s", tt.line, got, want)
			}
		})
	}
}
