package testutil

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/client"
)

// HTTPApp is the import path of the test application containers run (see its package comment);
// StaticBinary(tb, HTTPApp) builds it.
const HTTPApp = "github.com/infera-dev/infera/internal/testutil/httpapp"

// dockerTimeout bounds each engine or registry call a helper makes: on loopback they take
// milliseconds, and a hung engine should fail the test rather than its -timeout.
const dockerTimeout = 2 * time.Minute

// Docker is a client of the Docker engine that DOCKER_HOST names (the default socket when it is
// unset), its API version negotiated down to the engine's (Debian's dockerd 20.10 speaks 1.41).
// No engine answering fails the test: the tests that need one never skip.
func Docker(tb testing.TB) *client.Client {
	tb.Helper()
	cli, err := client.New(client.FromEnv)
	if err != nil {
		tb.Fatalf("docker client (DOCKER_HOST=%q): %v", os.Getenv("DOCKER_HOST"), err)
	}
	tb.Cleanup(func() { _ = cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		tb.Fatalf("no Docker engine answers at DOCKER_HOST=%q (%s): %v; run bash scripts/test.sh, which starts dockerd, "+
			"or start one: dockerd >/tmp/dockerd.log 2>&1 &", os.Getenv("DOCKER_HOST"), cli.DaemonHost(), err)
	}
	return cli
}

// RegistryOptions configures StartRegistry.
type RegistryOptions struct {
	// Username and Password, when Username is set, are the only credentials the registry
	// accepts: every request without them by HTTP basic auth is answered 401.
	Username, Password string
}

// Registry is an OCI registry on a loopback port, in this process (go-containerregistry's, blobs
// in memory), over plain HTTP: Docker trusts 127.0.0.0/8 registries without TLS by default.
type Registry struct {
	addr string
	opts RegistryOptions
	h    http.Handler

	blobGets     atomic.Int64
	manifestGets atomic.Int64
	unauthorized atomic.Int64
}

// StartRegistry starts a registry for the test and closes it when the test ends.
func StartRegistry(tb testing.TB, opts RegistryOptions) *Registry {
	tb.Helper()
	r := &Registry{opts: opts, h: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	srv := httptest.NewServer(http.HandlerFunc(r.serve)) // 127.0.0.1:0
	tb.Cleanup(srv.Close)
	r.addr = srv.Listener.Addr().String()
	return r
}

// Addr is the registry's host and port, "127.0.0.1:PORT", which image references start with.
func (r *Registry) Addr() string { return r.addr }

// BlobGets is how many blob downloads (GET /v2/NAME/blobs/DIGEST) the registry has served.
func (r *Registry) BlobGets() int { return int(r.blobGets.Load()) }

// ManifestGets is how many manifest fetches (GET or HEAD /v2/NAME/manifests/REF) it has served.
func (r *Registry) ManifestGets() int { return int(r.manifestGets.Load()) }

// Unauthorized is how many requests it has refused for want of credentials.
func (r *Registry) Unauthorized() int { return int(r.unauthorized.Load()) }

// serve checks credentials and counts, then hands the request to the registry.
func (r *Registry) serve(w http.ResponseWriter, req *http.Request) {
	if r.opts.Username != "" {
		user, pass, ok := req.BasicAuth()
		if !ok || user != r.opts.Username || pass != r.opts.Password {
			r.unauthorized.Add(1)
			w.Header().Set("WWW-Authenticate", `Basic realm="infera-test"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
	}
	p := req.URL.Path
	switch {
	case req.Method == http.MethodGet && strings.Contains(p, "/blobs/") && !strings.Contains(p, "/blobs/uploads"):
		r.blobGets.Add(1)
	case (req.Method == http.MethodGet || req.Method == http.MethodHead) && strings.Contains(p, "/manifests/"):
		r.manifestGets.Add(1)
	}
	r.h.ServeHTTP(w, req)
}

var staticBinaries struct {
	mu    sync.Mutex
	built map[string]string // package -> binary
}

// StaticBinary builds the main package pkg (an import path, or a path relative to the module
// root such as "./internal/testutil/httpapp") with CGO_ENABLED=0, so that it runs in an image
// with nothing else in it, and returns the binary's path. It builds each package once per test
// process, into os.UserCacheDir()/infera/testbin (Go's build cache makes later processes' builds
// quick); the binary is named for the package's last element.
func StaticBinary(tb testing.TB, pkg string) string {
	tb.Helper()
	staticBinaries.mu.Lock()
	defer staticBinaries.mu.Unlock()
	if bin, ok := staticBinaries.built[pkg]; ok {
		return bin
	}
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		tb.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	cache, err := os.UserCacheDir()
	if err != nil {
		tb.Fatal(err)
	}
	key := sha256.Sum256([]byte(root + "\x00" + pkg))
	dir := filepath.Join(cache, "infera", "testbin", hex.EncodeToString(key[:8]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	bin := filepath.Join(dir, path.Base(pkg))
	// Another test process may be building or running the same binary: build beside it and
	// rename over it, which leaves a running copy alone.
	tmp, err := os.CreateTemp(dir, ".build-*")
	if err != nil {
		tb.Fatal(err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.Command("go", "build", "-buildvcs=false", "-o", tmp.Name(), pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	if err := os.Rename(tmp.Name(), bin); err != nil {
		tb.Fatal(err)
	}
	if staticBinaries.built == nil {
		staticBinaries.built = map[string]string{}
	}
	staticBinaries.built[pkg] = bin
	return bin
}

// ImageFile is one file of an image built by BuildImage: Data, or the content of HostPath.
type ImageFile struct {
	Data     []byte
	HostPath string
	// Mode is the file's permissions, with fs.ModeSetuid, fs.ModeSetgid and fs.ModeSticky
	// honoured; zero means HostPath's own mode, or 0644 for Data.
	Mode fs.FileMode
}

// ImageSpec is what BuildImage puts in an image; the config fields are those of the OCI image
// config.
type ImageSpec struct {
	Files      map[string]ImageFile // by absolute path in the image
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	User       string
	Labels     map[string]string
}

// BuildImage builds a linux image FROM scratch for this machine's architecture: one layer with
// spec's files, their parent directories (0755) and /tmp (1777, so a read-only root filesystem
// still has a writable mount point for an emptyDir), and a config with spec's fields. The layer
// is reproducible: the same spec gives the same digest.
func BuildImage(tb testing.TB, spec ImageSpec) v1.Image {
	tb.Helper()
	type entry struct {
		hdr  tar.Header
		data []byte
	}
	entries := map[string]entry{
		"tmp/": {hdr: tar.Header{Typeflag: tar.TypeDir, Mode: 0o1777}},
	}
	for p, f := range spec.Files {
		if !path.IsAbs(p) {
			tb.Fatalf("BuildImage: file %q: path must be absolute", p)
		}
		data, mode := f.Data, f.Mode
		if f.HostPath != "" {
			var err error
			if data, err = os.ReadFile(f.HostPath); err != nil {
				tb.Fatal(err)
			}
			if mode == 0 {
				fi, err := os.Stat(f.HostPath)
				if err != nil {
					tb.Fatal(err)
				}
				mode = fi.Mode()
			}
		}
		if mode == 0 {
			mode = 0o644
		}
		rel := strings.TrimPrefix(path.Clean(p), "/")
		entries[rel] = entry{hdr: tar.Header{Typeflag: tar.TypeReg, Mode: tarMode(mode), Size: int64(len(data))}, data: data}
		for d := path.Dir(rel); d != "."; d = path.Dir(d) {
			if _, ok := entries[d+"/"]; !ok {
				entries[d+"/"] = entry{hdr: tar.Header{Typeflag: tar.TypeDir, Mode: 0o755}}
			}
		}
	}
	var layerTar bytes.Buffer
	tw := tar.NewWriter(&layerTar)
	for _, p := range slices.Sorted(maps.Keys(entries)) { // a parent sorts before its children

		e := entries[p]
		e.hdr.Name, e.hdr.ModTime, e.hdr.Format = p, time.Unix(0, 0), tar.FormatPAX
		if err := tw.WriteHeader(&e.hdr); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar.Bytes())), nil
	}, tarball.WithCompressionLevel(gzip.BestSpeed), tarball.WithCompressedCaching)
	if err != nil {
		tb.Fatal(err)
	}

	// The config first, then the layer: mutate.ConfigFile replaces the rootfs and history that
	// mutate.Append fills in.
	cfg, err := empty.Image.ConfigFile()
	if err != nil {
		tb.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Config = v1.Config{
		Entrypoint: spec.Entrypoint, Cmd: spec.Cmd, Env: spec.Env,
		WorkingDir: spec.WorkingDir, User: spec.User, Labels: spec.Labels,
	}
	img, err := mutate.ConfigFile(empty.Image, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{CreatedBy: "testutil.BuildImage"}})
	if err != nil {
		tb.Fatal(err)
	}
	return img
}

// tarMode is m in a tar header's bits.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	for _, b := range []struct {
		fs  fs.FileMode
		tar int64
	}{{fs.ModeSetuid, 0o4000}, {fs.ModeSetgid, 0o2000}, {fs.ModeSticky, 0o1000}} {
		if m&b.fs != 0 {
			mode |= b.tar
		}
	}
	return mode
}

// PushImage pushes img to ref (a tag or digest reference on a loopback registry, over plain
// HTTP) without credentials and returns its manifest digest, "sha256:...".
func PushImage(tb testing.TB, ref string, img v1.Image) string {
	tb.Helper()
	return PushImageAuth(tb, ref, img, "", "")
}

// PushImageAuth is PushImage with HTTP basic auth credentials (none when user is empty).
func PushImageAuth(tb testing.TB, ref string, img v1.Image, user, pass string) string {
	tb.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		tb.Fatal(err)
	}
	var auth authn.Authenticator = authn.Anonymous
	if user != "" {
		auth = &authn.Basic{Username: user, Password: pass}
	}
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	if err := remote.Write(r, img, remote.WithAuth(auth), remote.WithContext(ctx)); err != nil {
		tb.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		tb.Fatal(err)
	}
	return d.String()
}

// LoadImage puts img into the engine as ref (a tag), as docker load does, with no registry.
func LoadImage(tb testing.TB, cli *client.Client, ref string, img v1.Image) {
	tb.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		tb.Fatal(err)
	}
	var archive bytes.Buffer
	if err := tarball.Write(tag, img, &archive); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	resp, err := cli.ImageLoad(ctx, &archive, client.ImageLoadWithQuiet(true))
	if err != nil {
		tb.Fatalf("docker load %s: %v", ref, err)
	}
	defer resp.Close()
	if err := drainMessages(resp); err != nil {
		tb.Fatalf("docker load %s: %v", ref, err)
	}
}

// drainMessages reads an engine's JSON message stream to its end and returns the first error it
// reports.
func drainMessages(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var m jsonstream.Message
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		if m.Error != nil {
			return m.Error
		}
	}
}

// RemoveImages removes the images refs name from the engine (forced, so a stopped container
// left behind does not keep one), ignoring those that are not there; it reports failures
// without stopping the test, as a cleanup should.
func RemoveImages(tb testing.TB, cli *client.Client, refs ...string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	for _, ref := range refs {
		_, err := cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{Force: true, PruneChildren: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			tb.Errorf("remove image %s: %v", ref, err)
		}
	}
}

// RemoveContainersLabeled force-removes every container, running or not, that carries the
// label key (whatever its value), with its anonymous volumes. Give each test its own key:
// tests of other packages share the engine.
func RemoveContainersLabeled(tb testing.TB, cli *client.Client, key string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	list, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", key)})
	if err != nil {
		tb.Errorf("list containers labelled %s: %v", key, err)
		return
	}
	for _, c := range list.Items {
		_, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			tb.Errorf("remove container %s: %v", c.ID, err)
		}
	}
}
