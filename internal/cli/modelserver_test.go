package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/infera-dev/infera/internal/modelserver"
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
		{"bad load parallelism", []string{"--model-dir", "x", "--load-parallelism", "0"}, "--load-parallelism (0)"},
		{"empty name", []string{"--model-dir", "x", "--name", "a", "--name", ""}, "--name must not be empty"},
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

// serveModel runs the server command through Main on a port from $PORT (0:
// any free one) and returns its address from the JSON log, the log's "model
// loaded" record, and stop, which cancels it as a signal would and returns
// its exit code.
func serveModel(t *testing.T, args ...string) (addr string, loaded map[string]any, stop func() int) {
	t.Helper()
	t.Setenv("PORT", "0")
	logR, logW := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	exit := make(chan int, 1)
	go func() {
		exit <- Main(ctx, append([]string{"model-server"}, args...), IO{Out: io.Discard, ErrOut: logW})
		logW.Close()
	}()
	lines := bufio.NewScanner(logR)
	for addr == "" && lines.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(lines.Bytes(), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", lines.Text())
		}
		switch rec["msg"] {
		case "model loaded":
			loaded = rec
		case "model server ready":
			addr, _ = rec["addr"].(string)
		}
	}
	if addr == "" {
		cancel()
		t.Fatalf("no ready line in the log (exit %d)", <-exit)
	}
	go io.Copy(io.Discard, logR) // the rest of the log
	var once sync.Once
	code := -1
	stop = func() int {
		once.Do(func() { cancel(); code = <-exit })
		return code
	}
	t.Cleanup(func() { stop() })
	return addr, loaded, stop
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %d %s: %v", url, resp.StatusCode, b, err)
	}
	return resp.StatusCode
}

// TestModelServerServe serves a model, asks it for its models, and stops it
// as a signal would: exit 0.
func TestModelServerServe(t *testing.T) {
	dir := t.TempDir()
	if code := Main(context.Background(), []string{"model-server", "init", dir, "--size", "1Mi"}, IO{Out: io.Discard, ErrOut: io.Discard}); code != 0 {
		t.Fatalf("init: exit %d", code)
	}
	t.Setenv("K_SERVICE", "")
	addr, _, stop := serveModel(t, "--model-dir", dir, "--name", "served")
	var list struct {
		Data []struct{ ID string }
	}
	if code := getJSON(t, "http://"+addr+"/v1/models", &list); code != 200 || len(list.Data) != 1 || list.Data[0].ID != "served" {
		t.Errorf("GET /v1/models: %d %+v", code, list)
	}
	if code := stop(); code != ExitOK {
		t.Errorf("exit %d after the signal, want 0", code)
	}
}

// TestModelServerNames: the names served, from --name (several), $K_SERVICE
// and config.json; and the load's flags and figures in the log and the v2
// metadata.
func TestModelServerNames(t *testing.T) {
	dir := t.TempDir()
	if code := Main(context.Background(), []string{"model-server", "init", dir, "--size", "1Mi", "--name", "llm"}, IO{Out: io.Discard, ErrOut: io.Discard}); code != 0 {
		t.Fatalf("init: exit %d", code)
	}
	tests := []struct {
		name       string
		kService   string
		args       []string
		want       []string
		wantMethod string
		wantPar    float64
	}{
		{"config.json's name", "", nil, []string{"llm"}, "read", float64(modelserver.DefaultLoadParallelism)},
		{"K_SERVICE first", "chat", nil, []string{"chat", "llm"}, "read", float64(modelserver.DefaultLoadParallelism)},
		{"--name twice", "", []string{"--name", "a", "--name", "org/b"}, []string{"a", "org/b"}, "read", float64(modelserver.DefaultLoadParallelism)},
		{"--name and K_SERVICE", "chat", []string{"--name", "a"}, []string{"a", "chat"}, "read", float64(modelserver.DefaultLoadParallelism)},
		{"--load-parallelism --mmap", "", []string{"--load-parallelism", "3", "--mmap"}, []string{"llm"}, "mmap", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("K_SERVICE", tt.kService)
			addr, loaded, _ := serveModel(t, append([]string{"--model-dir", dir}, tt.args...)...)
			var list struct {
				Object string
				Data   []struct{ ID, Object string }
			}
			if code := getJSON(t, "http://"+addr+"/v1/models", &list); code != 200 || list.Object != "list" || len(list.Data) != len(tt.want) {
				t.Fatalf("GET /v1/models: %d %+v; want %q", code, list, tt.want)
			}
			for i, m := range list.Data {
				if m.ID != tt.want[i] || m.Object != "model" {
					t.Errorf("model %d: %+v, want id %q", i, m, tt.want[i])
				}
			}
			var md struct {
				Name       string
				Parameters map[string]any
			}
			if code := getJSON(t, "http://"+addr+"/v2/models/"+url.PathEscape(tt.want[len(tt.want)-1]), &md); code != 200 ||
				md.Name != tt.want[len(tt.want)-1] || md.Parameters["load_method"] != tt.wantMethod || md.Parameters["load_parallelism"] != tt.wantPar {
				t.Errorf("v2 metadata %+v", md)
			}
			if loaded["model"] != tt.want[0] || loaded["load_method"] != tt.wantMethod || loaded["load_parallelism"] != tt.wantPar ||
				!(loaded["bytes"].(float64) > 0) || !(loaded["seconds"].(float64) > 0) || !(loaded["mb_per_s"].(float64) > 0) {
				t.Errorf("model loaded log record %v", loaded)
			}
		})
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
