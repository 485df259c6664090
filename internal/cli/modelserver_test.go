package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestModelServerInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "model")
	var out, errOut bytes.Buffer
	code := Main(context.Background(), []string{"model-server", "init", dir, "--size", "1MiB", "--name", "tiny", "--seed", "3"},
		IO{Out: &out, ErrOut: &errOut})
	if code != ExitOK {
		t.Fatalf("exit %d, stderr: %s", code, errOut.String())
	}
	for _, want := range []string{"SYNTHETIC", "random numbers, not a trained model", "synthetic weights", "model    tiny",
		filepath.Join(dir, "model.safetensors"), "infera model-server --model-dir " + dir} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	for _, f := range []string{"model.safetensors", "config.json", "tokenizer.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
}

func TestModelServerUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"not a size", []string{"init", "DIR", "--size", "lots"}, `--size "lots": not a size: want a Kubernetes quantity such as 256Mi`},
		{"negative", []string{"init", "DIR", "--size", "-1Mi"}, "below the minimum of 512Ki"},
		{"zero", []string{"init", "DIR", "--size", "0"}, "below the minimum"},
		{"too small", []string{"init", "DIR", "--size", "1KiB"}, "1024 bytes is below the minimum of 512Ki"},
		{"too big", []string{"init", "DIR", "--size", "1Ti"}, "1Ti is above the maximum of 64Gi"},
		{"fraction of a byte", []string{"init", "DIR", "--size", "1000000.5"}, "not a whole number of bytes"},
		{"double B", []string{"init", "DIR", "--size", "1MiBB"}, "not a size"},
		{"no dir", []string{"init"}, "accepts 1 arg(s), received 0"},
		{"no model dir", nil, "--model-dir is required"},
		{"bad port", []string{"--model-dir", "x", "--port", "70000"}, "--port 70000 is out of range"},
		{"bad parallelism", []string{"--model-dir", "x", "--parallelism", "0"}, "must be positive"},
		{"stray argument", []string{"serve"}, `unknown command "serve"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			args := append([]string{"model-server"}, tt.args...)
			for i, a := range args {
				if a == "DIR" {
					args[i] = t.TempDir()
				}
			}
			code := Main(context.Background(), args, IO{Out: &out, ErrOut: &errOut})
			if code != ExitUsage || !strings.Contains(errOut.String(), tt.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errOut.String(), ExitUsage, tt.want)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"256MiB", 256 << 20},
		{"256Mi", 256 << 20},
		{"1Gi", 1 << 30},
		{"1GiB", 1 << 30},
		{"64M", 64_000_000},
		{"64MB", 64_000_000},
		{"600k", 600_000},
		{"1048576", 1 << 20},
		{"1048576B", 1 << 20},
		{" 2Mi ", 2 << 20},
		{"1.5Gi", 3 << 29},
		{"1e6", 1_000_000},
	}
	for _, tt := range tests {
		if got, err := parseSize(tt.in); err != nil || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

// TestModelServerServe runs the server command through Main on a port from
// $PORT (0: any free one), finds its address in the JSON log, asks it for
// its health, and stops it as a signal would: exit 0.
func TestModelServerServe(t *testing.T) {
	dir := t.TempDir()
	if code := Main(context.Background(), []string{"model-server", "init", dir, "--size", "1Mi"}, IO{Out: io.Discard, ErrOut: io.Discard}); code != 0 {
		t.Fatalf("init: exit %d", code)
	}
	t.Setenv("PORT", "0")
	logR, logW := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exit := make(chan int, 1)
	go func() {
		exit <- Main(ctx, []string{"model-server", "--model-dir", dir, "--name", "served"}, IO{Out: io.Discard, ErrOut: logW})
		logW.Close()
	}()

	lines := bufio.NewScanner(logR)
	var addr string
	for addr == "" && lines.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(lines.Bytes(), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", lines.Text())
		}
		if rec["msg"] == "model server ready" {
			addr, _ = rec["addr"].(string)
		}
	}
	if addr == "" {
		t.Fatalf("no ready line in the log (exit %d)", <-exit)
	}
	go io.Copy(io.Discard, logR) // the rest of the log

	client := &http.Client{Transport: &http.Transport{}}
	resp, err := client.Get("http://" + addr + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	client.CloseIdleConnections()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"id":"served"`) {
		t.Errorf("GET /v1/models: %d %s", resp.StatusCode, b)
	}
	cancel()
	if code := <-exit; code != ExitOK {
		t.Errorf("exit %d after the signal, want 0", code)
	}
}

func TestModelServerBadModel(t *testing.T) {
	var errOut bytes.Buffer
	t.Setenv("PORT", "0")
	code := Main(context.Background(), []string{"model-server", "--model-dir", t.TempDir()}, IO{Out: io.Discard, ErrOut: &errOut})
	if code != ExitFailure || !strings.Contains(errOut.String(), "invalid model") || !strings.Contains(errOut.String(), "infera model-server init") {
		t.Errorf("exit %d, stderr %s", code, errOut.String())
	}
}
