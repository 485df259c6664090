package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/net/http2"
)

// TestH2CEndToEnd: a container port named h2c gets HTTP/2 cleartext from the client through the
// gateway to the replica (the reference model server speaks h2c).
func TestH2CEndToEnd(t *testing.T) {
	model := filepath.Join(t.TempDir(), "model")
	if out, err := exec.Command(inferaBin, "model-server", "init", model, "--size", "1MiB", "--name", "h2").CombinedOutput(); err != nil {
		t.Fatalf("model-server init: %v\n%s", err, out)
	}
	u := startUp(t, fmt.Sprintf(`apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: h2
spec:
  template:
    spec:
      containers:
        - image: ghcr.io/infera-dev/infera
          command: ["infera"]
          args: ["model-server", "--model-dir=%s"]
          ports:
            - name: h2c
              containerPort: 8080
          readinessProbe:
            httpGet:
              path: /health
`, model))
	u.waitReady("h2")
	client := &http.Client{Transport: &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	req, _ := http.NewRequest(http.MethodPost, "http://"+u.gateway+"/v1/completions",
		strings.NewReader(`{"model":"h2","prompt":"hi","max_tokens":4}`))
	req.Host = "h2.default.localhost"
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || !strings.Contains(string(b), `"choices"`) {
		t.Errorf("h2c completion: %s %d %s", resp.Proto, resp.StatusCode, b)
	}
}
