package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/testutil"
)

// inferaImage is an image of a static infera binary at /infera running `infera model-server`
// on the model under modelDir: what a user builds to serve the article's Fluid example.
func inferaImage(t testing.TB, modelDir string) testutil.ImageSpec {
	t.Helper()
	return testutil.ImageSpec{
		Files:      map[string]testutil.ImageFile{"/infera": {HostPath: testutil.StaticBinary(t, "github.com/infera-dev/infera/cmd/infera"), Mode: 0o755}},
		Entrypoint: []string{"/infera", "model-server", "--model-dir", modelDir},
	}
}

// TestArticleServicesAsImages runs the article's helloworld-go Services (examples/autoscaling,
// graceful-shutdown, probes) as images, changed only in the image's registry: a loopback
// registry holds a stand-in image (httpapp) under the same repository and tag.
func TestArticleServicesAsImages(t *testing.T) {
	cli := testutil.Docker(t)
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{})
	ref := reg.Addr() + "/knative/helloworld-go:latest"
	testutil.PushImage(t, ref, testutil.BuildImage(t, appImage(t, "hello")))
	t.Cleanup(func() { testutil.RemoveImages(t, cli, ref) })

	var docs []string
	for _, f := range []string{"autoscaling", "graceful-shutdown", "probes"} {
		b, err := os.ReadFile(filepath.Join("..", "examples", f, "service.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		y := string(b)
		if !strings.Contains(y, "ghcr.io/knative/helloworld-go:latest") {
			t.Fatalf("examples/%s no longer names ghcr.io/knative/helloworld-go:latest", f)
		}
		docs = append(docs, strings.ReplaceAll(y, "ghcr.io/knative/helloworld-go:latest", ref))
	}
	u := startUp(t, strings.Join(docs, "\n---\n"))
	for _, svc := range []string{"helloworld", "helloworld-go", "runtime"} {
		u.waitReady(svc)
		if code, body := u.get(t, svc+".default.localhost", "/"); code != 200 || !strings.HasPrefix(body, "hello from "+svc+"-00001") {
			t.Errorf("%s: GET / = %d %q", svc, code, body)
		}
	}
	for _, r := range u.revisions(t) {
		if r.Runtime != "docker" || !strings.HasPrefix(r.ImageDigest, reg.Addr()+"/knative/helloworld-go@sha256:") {
			t.Errorf("revision %s: runtime %q image %q, want a container pinned by digest", r.Name, r.Runtime, r.ImageDigest)
		}
	}
}

// TestArticleFluidModelCacheAsImage is the article's Fluid example with its Service as an
// image: a static infera model server whose entrypoint reads the model where the Service
// mounts the Dataset's claim (/data/models). The Dataset is fetched from a real S3 server and
// bound into the container by the model cache (a lazy FUSE mount while it streams in).
func TestArticleFluidModelCacheAsImage(t *testing.T) {
	cli := testutil.Docker(t)
	s3, _ := articleModelStore(t)
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{})
	ref := reg.Addr() + "/ai/stable-diffusion:v1"
	testutil.PushImage(t, ref, testutil.BuildImage(t, inferaImage(t, "/data/models/models/sd")))
	t.Cleanup(func() { testutil.RemoveImages(t, cli, ref) })

	y := articleFluidExample(t, s3, t.TempDir())
	y, _, _ = strings.Cut(y, "\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: images") // no command mapping: the image runs
	y = strings.ReplaceAll(y, "registry.example.com/ai/stable-diffusion:v1", ref)
	u := startUp(t, y)
	u.waitReady("sd-backend")
	eventually(t, 60*time.Second, "a completion from the model in the container", func() (bool, string) {
		resp, err := u.do(http.MethodPost, "sd-backend.default.localhost", "/v1/completions",
			strings.NewReader(`{"model":"sd-backend","prompt":"a cat","max_tokens":4}`))
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		var body struct {
			Choices []struct{ Text string } `json:"choices"`
		}
		if resp.StatusCode == http.StatusServiceUnavailable {
			return false, "503 while the model loads"
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 || len(body.Choices) != 1 {
			t.Fatalf("completion: %d %+v %v\n%s", resp.StatusCode, body, err, u.out)
		}
		return true, ""
	})
	rv, _ := u.revision(t, "sd-backend-00001")
	if rv.Runtime != "docker" || rv.DatasetMode == "" {
		t.Errorf("revision: runtime %q dataset mode %q, want a container with its Dataset", rv.Runtime, rv.DatasetMode)
	}
	if strings.Contains(u.out.String(), s3.Secret()) {
		t.Fatal("the S3 secret key is in infera's log")
	}
}

// TestImageCachePrePullsAndServesWithoutPull: the article's ImageCache (its image pointed at a
// loopback registry) pre-pulls before any replica needs the image; a Service annotated
// k8s.aliyun.com/eci-image-cache: "true" then starts from it without touching the registry,
// and describe says so.
func TestImageCachePrePullsAndServesWithoutPull(t *testing.T) {
	cli := testutil.Docker(t)
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{})
	ref := reg.Addr() + "/ai/stable-diffusion:v1"
	digest := testutil.PushImage(t, ref, testutil.BuildImage(t, appImage(t, "cached")))
	testutil.RemoveImages(t, cli, ref) // the engine does not have it: only the cache pulls it
	t.Cleanup(func() { testutil.RemoveImages(t, cli, ref) })

	b, err := os.ReadFile(filepath.Join("..", "examples", "imagecache", "imagecache.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ic := strings.ReplaceAll(string(b), "registry.example.com/ai/stable-diffusion:v1", ref)
	u := startUp(t, ic)
	eventually(t, 60*time.Second, "the ImageCache Ready", func() (bool, string) {
		cs, err := u.client.ImageCaches(context.Background())
		if err != nil || len(cs) != 1 {
			return false, "no imagecache"
		}
		c := cs[0]
		return c.Phase == "Ready" && len(c.Images) == 1 && c.Images[0].State == "Ready", c.Phase + " " + c.Message
	})
	cs, _ := u.client.ImageCaches(context.Background())
	im := cs[0].Images[0]
	if !im.Owned || im.Digest != reg.Addr()+"/ai/stable-diffusion@"+digest || im.Size == 0 || cs[0].Limit != 25<<30 {
		t.Errorf("cached image %+v (limit %d)", im, cs[0].Limit)
	}
	out, err := exec.Command(inferaBin, "get", "imagecaches", "--admin", u.admin).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "imagecache-ai-model") || !strings.Contains(string(out), "Ready") {
		t.Errorf("infera get imagecaches: %v\n%s", err, out)
	}
	out, err = exec.Command(inferaBin, "describe", "imagecache", "imagecache-ai-model", "--admin", u.admin).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ref) || !strings.Contains(string(out), digest) {
		t.Errorf("infera describe imagecache: %v\n%s", err, out)
	}

	blobs, manifests := reg.BlobGets(), reg.ManifestGets()
	u.apply(t, imageService("sd", ref, map[string]string{"k8s.aliyun.com/eci-image-cache": "true"}, "", "imagePullPolicy: Always\n"))
	u.waitReady("sd")
	if code, body := u.get(t, "sd.default.localhost", "/"); code != 200 || !strings.Contains(body, "version=cached") {
		t.Fatalf("GET / = %d %q", code, body)
	}
	if reg.BlobGets() != blobs || reg.ManifestGets() != manifests {
		t.Errorf("the replica's start went to the registry (%d blob and %d manifest requests), want none: the cache had the image", reg.BlobGets()-blobs, reg.ManifestGets()-manifests)
	}
	reps := u.replicas(t)
	if len(reps) != 1 || reps[0].ImageSource != "cache" {
		t.Errorf("replicas %+v, want one whose image came from the cache", reps)
	}
	describe, _ := exec.Command(inferaBin, "describe", "service", "sd", "--admin", u.admin).CombinedOutput()
	if !strings.Contains(string(describe), "from cache") {
		t.Errorf("describe does not say the image came from the cache:\n%s", describe)
	}
}
