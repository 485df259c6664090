package e2e

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/adminapi"
)

// TestColdStartPhasesAfterScaleFromZero: the first request to a revision at zero is held
// while its replica starts; afterwards infera_cold_start_seconds (read with Prometheus's own
// parser) has one sample for each phase of that cold start under Knative's revision labels and
// none for the dataset phase it did not have, `get revisions -o json` has the same phases in
// LastColdStart, `describe service` shows them, and up's debug log has one line with each.
func TestColdStartPhasesAfterScaleFromZero(t *testing.T) {
	u := startUp(t, zeroInitialScale+appService("cold", map[string]string{"autoscaling.knative.dev/initial-scale": "0"}, nil, "", ""))
	eventually(t, 30*time.Second, "revision created at zero", func() (bool, string) {
		r, ok := u.revision(t, "cold-00001")
		return ok && r.Decision != nil && r.Decision.Desired == 0 && r.RunningReplicas == 0, fmt.Sprintf("%+v", r)
	})
	if r, _ := u.revision(t, "cold-00001"); r.LastColdStart != nil {
		t.Fatalf("a cold start before any request: %+v", r.LastColdStart)
	}
	if code, body := u.get(t, "cold.default.localhost", "/"); code != 200 || strings.TrimSpace(body) != "cold-00001" {
		t.Fatalf("first request at zero = %d %q", code, body)
	}

	rev := map[string]string{"namespace_name": "default", "service_name": "cold", "configuration_name": "cold", "revision_name": "cold-00001"}
	withPhase := func(p string) map[string]string {
		m := map[string]string{"phase": p}
		for k, v := range rev {
			m[k] = v
		}
		return m
	}
	phases := []string{"placement", "process_start", "readiness", "first_byte"}
	eventually(t, 10*time.Second, "a cold start sample for each phase", func() (bool, string) {
		fams := u.scrape(t)
		for _, p := range phases {
			if n, ok := sample(fams, "infera_cold_start_seconds", withPhase(p)); !ok || n != 1 {
				return false, fmt.Sprintf("phase %s: %v samples (found %v)", p, n, ok)
			}
		}
		return true, ""
	})
	if n, ok := sample(u.scrape(t), "infera_cold_start_seconds", withPhase("dataset")); ok {
		t.Errorf("%v dataset samples for a revision that waited for no Dataset", n)
	}

	// get revisions -o json: the same cold start, phase by phase.
	out, code := u.infera(t, "", "get", "revisions", "-o", "json")
	if code != 0 {
		t.Fatalf("get revisions -o json: exit %d\n%s", code, out)
	}
	var revs []adminapi.RevisionView
	mustJSON(t, []byte(out), &revs)
	var cs *adminapi.ColdStartView
	for _, r := range revs {
		if r.Name == "cold-00001" {
			cs = r.LastColdStart
		}
	}
	if cs == nil {
		t.Fatalf("no lastColdStart in get revisions -o json:\n%s", out)
	}
	reps := u.replicas(t)
	if len(reps) != 1 || cs.Replica != reps[0].Name || cs.Trigger != "request" || cs.DatasetMs != nil || cs.FirstByteMs == nil {
		t.Errorf("lastColdStart %+v; replicas %+v", cs, reps)
	}
	if sum := cs.PlacementMs + cs.ProcessStartMs + cs.ReadinessMs + *cs.FirstByteMs; math.Abs(sum-cs.TotalMs) > 1e-6 || cs.TotalMs <= 0 ||
		cs.ReadinessMs <= 0 {
		t.Errorf("phases %+v do not add up to a positive total", cs)
	}
	if age := time.Since(cs.At); age < 0 || age > time.Minute {
		t.Errorf("cold start at %v, %v ago", cs.At, age)
	}

	// describe service: a row for the revision with every phase.
	out, code = u.infera(t, "", "describe", "service", "cold")
	if code != 0 || !strings.Contains(out, "Last cold starts:") {
		t.Fatalf("describe: exit %d\n%s", code, out)
	}
	header := regexp.MustCompile(`(?m)^\s+REVISION\s+AT\s+TRIGGER\s+REPLICA\s+DATASET\s+PLACEMENT\s+IMAGE\s+PROCESS START\s+READINESS\s+FIRST BYTE\s+TOTAL$`)
	dur := `\d[0-9.µmsh]*s`
	row := regexp.MustCompile(`(?m)^\s+cold-00001\s+\S+\s+request\s+` + regexp.QuoteMeta(cs.Replica) + `\s+-\s+` + dur + `\s+-` + strings.Repeat(`\s+`+dur, 4) + `$`)
	if !header.MatchString(out) || !row.MatchString(out) {
		t.Errorf("describe lacks the cold start's phases:\n%s", out)
	}

	// The debug log: one line for it, with every phase it had.
	var lines []string
	for _, l := range strings.Split(u.out.String(), "\n") {
		if strings.Contains(l, `msg="cold start"`) && strings.Contains(l, "revision=default/cold-00001") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("%d cold start log lines, want 1:\n%s", len(lines), u.out)
	}
	for _, key := range append([]string{"service=default/cold", "replica=" + cs.Replica, "trigger=request", "total"}, phases...) {
		if !strings.Contains(lines[0], key) {
			t.Errorf("log line lacks %s: %s", key, lines[0])
		}
	}
}

// TestColdStartProgressThroughUp: a request for a revision at zero that asks with
// X-Infera-Progress: sse hears of its cold start as SSE comments, then gets the replica's answer.
func TestColdStartProgressThroughUp(t *testing.T) {
	u := startUp(t, zeroInitialScale+appService("prog", map[string]string{"autoscaling.knative.dev/initial-scale": "0"}, nil, "", ""))
	eventually(t, 30*time.Second, "revision at zero", func() (bool, string) {
		r, ok := u.revision(t, "prog-00001")
		return ok && r.Routed && r.RunningReplicas == 0, r.State
	})
	req, _ := http.NewRequest(http.MethodGet, "http://"+u.gateway+"/", nil)
	req.Host = "prog.default.localhost"
	req.Header.Set("X-Infera-Progress", "sse")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" ||
		!strings.HasPrefix(string(b), ": infera cold-start phase=") || !strings.Contains(string(b), "prog-00001") {
		t.Fatalf("%d %q\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
}
