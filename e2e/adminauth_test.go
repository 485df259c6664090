package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/adminapi"
)

// TestAdminAPIGuardedOffLoopback: an up whose admin address is not loopback makes a bearer
// token in its state directory (0600) and answers 401 to every request without it; an apply
// without it applies nothing (the Service's command, which would leave a file, never runs);
// with $INFERA_TOKEN the CLI works. The token is in no output. (The test binds 0.0.0.0 and
// talks to 127.0.0.1: its traffic stays on loopback.)
func TestAdminAPIGuardedOffLoopback(t *testing.T) {
	state := t.TempDir()
	u := startUpIn(t, state, "", "--admin", "0.0.0.0:0")
	_, port, _ := net.SplitHostPort(u.admin)
	admin := "127.0.0.1:" + port

	file := filepath.Join(state, adminapi.TokenFile)
	info, err := os.Stat(file)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("token file %s: %v %v, want mode 0600", file, info, err)
	}
	b, _ := os.ReadFile(file)
	token := strings.TrimSpace(string(b))

	cli := func(env []string, stdin string, args ...string) (string, int) {
		cmd := exec.Command(inferaBin, append(args, "--admin", admin)...)
		// A home with no state directory: the CLI finds no token file there.
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "XDG_STATE_HOME="+t.TempDir(), adminapi.TokenEnv+"=")
		cmd.Env = append(cmd.Env, env...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	marker := filepath.Join(t.TempDir(), "ran")
	// Its command leaves the marker, then runs the app.
	svc := imageService("guarded", "e2e-app", nil, "", fmt.Sprintf("command: [\"/bin/sh\", \"-c\", \"touch %s; exec %s\"]\nenv: [{name: %s, value: \"1\"}]\n", marker, appBin, appEnv))
	out, code := cli(nil, svc, "apply", "-f", "-")
	if code == 0 || !strings.Contains(out, "bearer token") {
		t.Fatalf("apply without the token: exit %d\n%s", code, out)
	}
	for _, path := range []string{"/api/v1/services", "/metrics", "/api/v1/gpus"} {
		resp, err := http.Get("http://" + admin + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("GET %s without the token: %d", path, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+admin+"/api/v1/services", nil)
	req.Header.Set("Authorization", "Bearer not-"+token)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a wrong token: %v %v", resp, err)
	}
	if resp, err := http.Get("http://" + admin + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("healthz stays open: %v %v", resp, err)
	}

	out, code = cli([]string{adminapi.TokenEnv + "=" + token}, "", "get", "services")
	if code != 0 || strings.Contains(out, "guarded") {
		t.Fatalf("after the refused apply, with the token: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the refused apply ran the Service's command")
	}
	out, code = cli([]string{adminapi.TokenEnv + "=" + token}, svc, "apply", "-f", "-")
	if code != 0 {
		t.Fatalf("apply with the token: exit %d\n%s", code, out)
	}
	eventually(t, 30*time.Second, "the applied Service's command ran", func() (bool, string) {
		_, err := os.Stat(marker)
		return err == nil, fmt.Sprint(err)
	})
	if strings.Contains(u.out.String(), token) {
		t.Fatal("the token is in up's output")
	}
}
