package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// infera runs the CLI against the running up and returns its output and exit code.
func (u *up) infera(t *testing.T, stdin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(inferaBin, append(args, "--admin", u.admin)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

const secretValue = "s3cr3t-value-never-shown"

func TestCLIAndSecretsAgainstRunningUp(t *testing.T) {
	u := startUp(t, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: placeholder\ndata: {}\n")
	secret := `apiVersion: v1
kind: Secret
metadata:
  name: token
  namespace: default
stringData:
  key: ` + secretValue + `
---
`
	svc := fmt.Sprintf(`apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: cli
spec:
  template:
    spec:
      containers:
        - image: e2e-app
          command: [%q]
          env:
            - name: %s
              value: "1"
            - name: TOKEN
              valueFrom:
                secretKeyRef:
                  name: token
                  key: key
`, appBin, appEnv)

	// An invalid set is refused whole: the good Secret in it is not applied either.
	bad := secret + strings.Replace(svc, "containers:", "containerz:", 1)
	out, code := u.infera(t, bad, "apply", "-f", "-")
	if code != 1 || !strings.Contains(out, `<stdin>:`) || !strings.Contains(out, "nothing was applied") {
		t.Fatalf("invalid apply: exit %d\n%s", code, out)
	}
	if out, _ := u.infera(t, "", "get", "services"); strings.Contains(out, "cli") {
		t.Fatalf("invalid apply left a service behind:\n%s", out)
	}

	out, code = u.infera(t, secret+svc, "apply", "-f", "-")
	if code != 0 || !strings.Contains(out, "service.serving.knative.dev/cli created") || !strings.Contains(out, "secret/token created") {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	u.waitReady("cli")
	if code, body := u.get(t, "cli.default.localhost", "/env?k=TOKEN"); code != 200 || body != secretValue {
		t.Errorf("replica env TOKEN = %d %q, want the secret's value", code, body)
	}
	if code, body := u.get(t, "cli.default.localhost", "/env?k=K_SERVICE"); code != 200 || body != "cli" {
		t.Errorf("K_SERVICE = %d %q", code, body)
	}

	for _, args := range [][]string{
		{"get", "services"}, {"get", "revisions"}, {"get", "replicas"}, {"describe", "service", "cli"},
		{"get", "services", "-o", "json"}, {"get", "revisions", "-o", "json"}, {"describe", "service", "cli", "-o", "json"},
	} {
		out, code := u.infera(t, "", args...)
		if code != 0 || !strings.Contains(out, "cli") {
			t.Errorf("infera %v: exit %d\n%s", args, code, out)
		}
		if strings.Contains(out, secretValue) {
			t.Errorf("infera %v shows the secret's value", args)
		}
	}
	if out, _ := u.infera(t, "", "describe", "service", "cli"); !strings.Contains(out, "cli-00001") || !strings.Contains(out, "Ready") {
		t.Errorf("describe lacks the revision or conditions:\n%s", out)
	}
	for _, path := range []string{"/api/v1/services", "/api/v1/revisions", "/api/v1/replicas", "/api/v1/services/default/cli", "/metrics"} {
		resp, err := http.Get("http://" + u.admin + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), secretValue) {
			t.Errorf("admin %s returns the secret's value", path)
		}
	}
	if strings.Contains(u.out.String(), secretValue) {
		t.Errorf("infera up's log shows the secret's value")
	}

	out, code = u.infera(t, secret+svc, "delete", "-f", "-")
	if code != 0 || !strings.Contains(out, "service.serving.knative.dev/cli deleted") {
		t.Fatalf("delete: exit %d\n%s", code, out)
	}
	eventually(t, 30*time.Second, "service and replicas gone", func() (bool, string) {
		svcs, _ := u.infera(t, "", "get", "services")
		reps := u.replicas(t)
		return !strings.Contains(svcs, "cli") && len(reps) == 0, svcs
	})
	if code, _ := u.get(t, "cli.default.localhost", "/"); code != http.StatusNotFound {
		t.Errorf("after delete: %d, want 404", code)
	}
}

func TestCLIWithoutUp(t *testing.T) {
	cmd := exec.Command(inferaBin, "get", "services", "--admin", "127.0.0.1:1")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "no infera up is answering") {
		t.Errorf("get without up: %v\n%s", err, out)
	}
}
