package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/modelserver"
	"github.com/infera-dev/infera/internal/testutil"
)

// articleFluidExample is examples/fluid-model-cache/ as a user adapts it to their own S3: the
// endpoint and the keys changed, the cache path pointed at a directory of this machine, and
// the image mapped to the command that serves it (infera runs processes: ConfigMap
// infera-system/images).
func articleFluidExample(t testing.TB, s3 *testutil.S3Server, cacheDir string) string {
	t.Helper()
	var docs []string
	for _, f := range []string{"model-store.yaml", "service.yaml"} {
		b, err := os.ReadFile(filepath.Join("..", "examples", "fluid-model-cache", f))
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, string(b))
	}
	y := strings.Join(docs, "\n---\n")
	for _, r := range [][2]string{
		{`"oss-cn-beijing.aliyuncs.com"`, `"` + s3.Endpoint() + `"`},
		{"your_ak_id", s3.Access()},
		{"your_ak_skrt", s3.Secret()},
		{"/mnt/ssd0/cache", cacheDir},
	} {
		if !strings.Contains(y, r[0]) {
			t.Fatalf("the example no longer contains %q", r[0])
		}
		y = strings.ReplaceAll(y, r[0], r[1])
	}
	return y + `
---
apiVersion: v1
kind: ConfigMap
metadata: {name: images, namespace: infera-system}
data:
  sd: "registry.example.com/ai/stable-diffusion:v1 = infera model-server --model-dir /data/models/models/sd"
`
}

// articleModelStore is a real S3 server holding the article's bucket with an 8 MiB synthetic
// model "sd" under models/sd/, where the article's Dataset and Service expect it.
func articleModelStore(t testing.TB) (*testutil.S3Server, modelserver.Info) {
	t.Helper()
	s3 := testutil.StartS3(t)
	s3.MakeBucket("my-bucket")
	model := t.TempDir()
	info, err := modelserver.Init(model, modelserver.InitOptions{Size: 8 << 20, Name: "sd"})
	if err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(model)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(model, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		s3.Put("my-bucket", "models/sd/"+e.Name(), b)
	}
	return s3, info
}

// TestArticleFluidModelCache runs the article's Fluid example end to end against a real S3
// server (versitygw on loopback): the revision is Pending on its Dataset while the model is
// fetched, then serves it from the cache; a restart of infera up with the S3 server stopped
// still serves it (a cache hit), and the keys appear nowhere.
func TestArticleFluidModelCache(t *testing.T) {
	s3, info := articleModelStore(t)

	state, cacheDir := t.TempDir(), t.TempDir()
	manifests := articleFluidExample(t, s3, cacheDir)
	u := startUpIn(t, state, manifests)
	u.waitReady("sd-backend")
	// The article's Service has no readiness probe, so Knative's default TCP probe passes as
	// soon as the model server listens, before its model is loaded; until then it answers 503
	// (as it would under Knative). A user sees that briefly; the test waits it out.
	complete := func(u *up) {
		t.Helper()
		eventually(t, 30*time.Second, "a completion from the cached model", func() (bool, string) {
			resp, err := u.do(http.MethodPost, "sd-backend.default.localhost", "/v1/completions",
				strings.NewReader(`{"model":"sd-backend","prompt":"a cat","max_tokens":4}`))
			if err != nil {
				return false, err.Error()
			}
			defer resp.Body.Close()
			var body struct {
				Choices []struct {
					Text string `json:"text"`
				} `json:"choices"`
			}
			err = json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode == http.StatusServiceUnavailable {
				return false, "503 while the model loads"
			}
			if err != nil || resp.StatusCode != 200 || len(body.Choices) != 1 {
				t.Fatalf("completion: %d %+v %v\n%s", resp.StatusCode, body, err, u.out)
			}
			return true, ""
		})
	}
	complete(u)

	ds, err := u.client.Dataset(context.Background(), "default", "oss-data")
	if err != nil {
		t.Fatal(err)
	}
	if ds.Phase != "Ready" || ds.Bytes != ds.Total || ds.Total < info.Size || ds.Level != "SSD" || !strings.HasPrefix(ds.LevelPath, cacheDir) || ds.Holders != 1 {
		t.Errorf("dataset after serving: %+v", ds)
	}
	out, err := exec.Command(inferaBin, "get", "datasets", "--admin", u.admin).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "oss-data") || !strings.Contains(string(out), "Ready") {
		t.Errorf("infera get datasets: %v\n%s", err, out)
	}
	describe, err := exec.Command(inferaBin, "describe", "dataset", "oss-data", "--admin", u.admin).CombinedOutput()
	if err != nil || !strings.Contains(string(describe), "Phase:       Ready") || !strings.Contains(string(describe), "(100%)") {
		t.Errorf("infera describe dataset: %v\n%s", err, describe)
	}

	// Secrets never leave: not in up's output, the API, the CLI or the metrics.
	var seen []string
	for _, path := range []string{"/api/v1/datasets", "/api/v1/revisions", "/api/v1/services", "/api/v1/replicas", "/metrics"} {
		resp, err := http.Get("http://" + u.admin + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seen = append(seen, string(b))
	}
	jsonOut, _ := exec.Command(inferaBin, "get", "datasets", "-o", "json", "--admin", u.admin).CombinedOutput()
	seen = append(seen, string(out), string(describe), string(jsonOut), u.out.String())
	for _, s := range seen {
		if strings.Contains(s, s3.Secret()) || strings.Contains(s, s3.Access()) {
			t.Fatalf("a key leaked:\n%s", s)
		}
	}

	// A restart with the S3 server gone: the cache answers.
	if err := u.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("up exit: %v\n%s", err, u.out)
	}
	s3.Stop()
	u2 := startUpIn(t, state, "")
	u2.waitReady("sd-backend")
	complete(u2)
	if ds, err := u2.client.Dataset(context.Background(), "default", "oss-data"); err != nil || ds.Phase != "Ready" {
		t.Errorf("dataset after a restart without S3: %+v %v", ds, err)
	}
}

// TestDatasetWrongKeys: a Dataset whose keys the store refuses fails with the 403 named, the
// revision mounting it says why, and the keys are not in any of it.
func TestDatasetWrongKeys(t *testing.T) {
	s3 := testutil.StartS3(t)
	s3.MakeBucket("my-bucket")
	s3.Put("my-bucket", "models/sd/config.json", []byte("{}"))
	y := articleFluidExample(t, s3, t.TempDir())
	y = strings.Replace(y, "fs.oss.accessKeySecret: "+s3.Secret(), "fs.oss.accessKeySecret: wrong-secret-value", 1)
	u := startUp(t, y)
	var msg string
	eventually(t, 60*time.Second, "revision failed on its dataset", func() (bool, string) {
		for _, r := range u.revisions(t) {
			if r.Service == "sd-backend" {
				msg = r.Message
				return r.State == "Failed" && strings.Contains(r.Message, "403"), fmt.Sprintf("%+v", r)
			}
		}
		return false, u.out.String()
	})
	ds, err := u.client.Dataset(context.Background(), "default", "oss-data")
	if err != nil || ds.Phase != "Failed" || !strings.Contains(ds.Message, "access denied") {
		t.Errorf("dataset with wrong keys: %+v %v", ds, err)
	}
	for _, s := range []string{msg, ds.Message, u.out.String()} {
		if strings.Contains(s, "wrong-secret-value") || strings.Contains(s, s3.Access()) {
			t.Errorf("a key leaked: %s", s)
		}
	}
}
