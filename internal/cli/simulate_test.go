package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const simService = `apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: tiny
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/window: "6s"
        autoscaling.knative.dev/target-utilization-percentage: "100"
        autoscaling.knative.dev/target-burst-capacity: "0"
    spec:
      containerConcurrency: 1
      containers:
        - image: infera.dev/model-server
`

const simTrace = `arrival_s,duration_s
0.5,1
0.5,2
3.0,0.5
`

// The rows internal/simulate's TestRunTinyTrace works out by hand.
const simRows = `t_s,ready,stable_concurrency,panic_concurrency,stable_rps,panic_rps,decider_desired,panic_mode,desired,excess_burst_capacity
2,1,1.250,1.500,1.000,0.000,2,true,2,0
4,2,1.125,1.000,0.750,1.000,2,true,2,0
6,2,0.750,0.000,0.500,0.000,2,true,2,0
8,2,0.333,0.000,0.167,0.000,2,true,2,0
10,2,0.000,0.000,0.000,0.000,1,false,1,0
12,1,0.000,0.000,0.000,0.000,0,false,1,0

# replica_seconds,20.000
`

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func runCLI(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := Main(context.Background(), args, IO{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	return code, out.String(), errOut.String()
}

func TestSimulate(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"svc.yaml":   simService,
		"trace.csv":  simTrace,
		"two.yaml":   simService + "---\n" + strings.Replace(simService, "name: tiny", "name: other", 1),
		"hpa.yaml":   strings.Replace(simService, `"6s"`, "\"6s\"\n        autoscaling.knative.dev/class: hpa.autoscaling.knative.dev\n        autoscaling.knative.dev/metric: cpu", 1),
		"bad.yaml":   strings.Replace(simService, `window: "6s"`, `window: "1s"`, 1),
		"cm.yaml":    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-autoscaler\n  namespace: knative-serving\ndata:\n  panic-threshold-percentage: \"1000\"\n",
		"badcm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-autoscaler\n  namespace: knative-serving\ndata:\n  max-scale-up-rate: \"0\"\n",
		"bad.csv":    "arrival,duration\n1,1\n",
	})
	p := func(name string) string { return filepath.Join(dir, name) }
	base := []string{"simulate", "-f", p("svc.yaml"), "--trace", p("trace.csv"), "--cold-start", "1s", "--until", "12s"}

	t.Run("csv", func(t *testing.T) {
		code, out, errOut := runCLI(append(base, "-o", "csv")...)
		if code != ExitOK || !strings.HasPrefix(out, simRows) || !strings.Contains(out, "# queue_wait_p99_s,1.000\n") {
			t.Fatalf("exit %d\n%s\nstderr: %s", code, out, errOut)
		}
	})
	t.Run("table", func(t *testing.T) {
		code, out, _ := runCLI(base...)
		lines := strings.Split(out, "\n")
		if code != ExitOK || strings.Fields(lines[0])[9] != "excess_burst_capacity" ||
			strings.Join(strings.Fields(lines[1]), ",") != "2,1,1.250,1.500,1.000,0.000,2,true,2,0" ||
			!strings.Contains(out, "cold_starts       1") {
			t.Fatalf("exit %d\n%s", code, out)
		}
	})
	t.Run("config-autoscaler applies", func(t *testing.T) {
		code, out, errOut := runCLI(append(base, "-f", p("cm.yaml"), "-o", "csv")...)
		if code != ExitOK || !strings.Contains(out, "\n2,1,1.250,1.500,1.000,0.000,2,false,2,0\n") {
			t.Fatalf("exit %d\n%s\nstderr: %s", code, out, errOut)
		}
	})
	t.Run("sweep", func(t *testing.T) {
		code, out, errOut := runCLI(append(base, "--sweep", "min-scale=0,3", "--sweep", "cold-start=1s,2s", "-o", "csv", "--p99-budget", "1s")...)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code != ExitOK || len(lines) != 5 || !strings.HasPrefix(lines[0], "min-scale,cold-start,replica_seconds,") ||
			!strings.HasPrefix(lines[1], "0,1s,20.000,") || !strings.HasSuffix(lines[1], ",true") {
			t.Fatalf("exit %d\n%s\nstderr: %s", code, out, errOut)
		}
	})

	failures := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"no manifests", []string{"simulate", "--trace", p("trace.csv")}, ExitUsage, "pass -f"},
		{"no trace", []string{"simulate", "-f", p("svc.yaml")}, ExitUsage, "--trace"},
		{"two stdins", []string{"simulate", "-f", "-", "--trace", "-"}, ExitUsage, "standard input"},
		{"bad output", append(base, "-o", "json"), ExitUsage, "csv or table"},
		{"bad sweep", append(base, "--sweep", "nonsense=1"), ExitUsage, "unknown setting"},
		{"invalid manifest, as validate reports it", []string{"simulate", "-f", p("bad.yaml"), "--trace", p("trace.csv")}, ExitFailure,
			"bad.yaml:9:9: Service default/tiny: spec.template.metadata.annotations[autoscaling.knative.dev/window]"},
		{"invalid config-autoscaler", append(base, "-f", p("badcm.yaml")), ExitFailure, "max-scale-up-rate"},
		{"hpa", []string{"simulate", "-f", p("hpa.yaml"), "--trace", p("trace.csv")}, ExitFailure, "infera implements only the KPA"},
		{"two services", []string{"simulate", "-f", p("two.yaml"), "--trace", p("trace.csv")}, ExitUsage, "--service"},
		{"unknown service", []string{"simulate", "-f", p("two.yaml"), "--trace", p("trace.csv"), "--service", "nope"}, ExitUsage, "default/other, default/tiny"},
		{"bad trace", []string{"simulate", "-f", p("svc.yaml"), "--trace", p("bad.csv")}, ExitFailure, "bad.csv: simulate: bad trace: header"},
		{"missing trace", []string{"simulate", "-f", p("svc.yaml"), "--trace", p("none.csv")}, ExitFailure, "no such file"},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := runCLI(tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.msg) {
				t.Errorf("exit %d (want %d), stderr:\n%s\nwant it to mention %q", code, tc.code, errOut, tc.msg)
			}
		})
	}
	// The same problems as infera validate, line for line.
	_, _, validateErr := runCLI("validate", "-f", p("bad.yaml"))
	_, _, simErr := runCLI("simulate", "-f", p("bad.yaml"), "--trace", p("trace.csv"))
	vl, sl := strings.Split(validateErr, "\n"), strings.Split(simErr, "\n")
	if len(vl) < 3 || len(sl) < 3 || vl[0] != sl[0] || vl[1] != sl[1] {
		t.Errorf("validate says\n%s\nsimulate says\n%s", validateErr, simErr)
	}
	// --service picks one of several.
	if code, out, errOut := runCLI("simulate", "-f", p("two.yaml"), "--trace", p("trace.csv"), "--service", "default/tiny",
		"--cold-start", "1s", "--until", "12s", "-o", "csv"); code != ExitOK || !strings.HasPrefix(out, simRows) {
		t.Errorf("--service: exit %d\n%s\n%s", code, out, errOut)
	}
}

// TestSimulateExample runs the example under examples/simulate.
func TestSimulateExample(t *testing.T) {
	code, out, errOut := runCLI("simulate", "-f", "../../examples/simulate/", "--trace", "../../examples/simulate/trace.csv",
		"--cold-start", "10s", "-o", "csv")
	if code != ExitOK || !strings.Contains(out, "# requests,547\n") || !strings.Contains(out, "# unserved,0\n") {
		t.Fatalf("exit %d\n%s\nstderr: %s", code, out, errOut)
	}
}
