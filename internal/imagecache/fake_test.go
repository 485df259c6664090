package imagecache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/distribution/reference"

	"github.com/infera-dev/infera/internal/container"
	"github.com/infera-dev/infera/internal/testutil"
)

var _ Engine = (*container.Engine)(nil)

// fakeEngine is a hand-written container engine: an image store, a registry that pulls copy
// from, and the containers using each image ID. Images are keyed by normalized reference, as
// the Manager names them.
type fakeEngine struct {
	mu       sync.Mutex
	images   map[string]container.Image // in the engine
	remote   map[string]container.Image // what a pull of the reference gets
	fail     map[string]string          // a pull of the reference fails with this engine message
	gate     map[string]chan struct{}   // a pull of the reference reports progress, then waits for close
	users    map[string]int             // containers by image ID
	usersErr error
	lookErr  error    // InspectImage fails with it
	calls    []string // "pull REF", "remove REF"
	auths    map[string]*container.Auth
}

func newFakeEngine() *fakeEngine {
	return &fakeEngine{
		images: map[string]container.Image{}, remote: map[string]container.Image{},
		fail: map[string]string{}, gate: map[string]chan struct{}{}, users: map[string]int{},
		auths: map[string]*container.Auth{},
	}
}

// fakeImage is an image of ref (written as in a cache) of gib GiB, with image ID "sha256:"+id.
func fakeImage(ref, id string, gib float64) container.Image {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		panic(err)
	}
	sum := sha256.Sum256([]byte(id))
	return container.Image{
		ID: "sha256:" + id, RepoTags: []string{mustNormalize(ref)},
		RepoDigests: []string{named.Name() + "@sha256:" + hex.EncodeToString(sum[:])},
		Size:        int64(gib * (1 << 30)),
	}
}

func mustNormalize(ref string) string {
	key, err := normalize(ref)
	if err != nil {
		panic(err)
	}
	return key
}

// have puts img in the engine; offer puts it in the registry.
func (f *fakeEngine) have(img container.Image) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.images[img.RepoTags[0]] = img
}

func (f *fakeEngine) offer(imgs ...container.Image) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, img := range imgs {
		f.remote[img.RepoTags[0]] = img
	}
}

func (f *fakeEngine) has(ref string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.images[mustNormalize(ref)]
	return ok
}

func (f *fakeEngine) drop(ref string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.images, mustNormalize(ref))
}

func (f *fakeEngine) setUsers(id string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.users["sha256:"+id] = n
}

func (f *fakeEngine) setFail(ref, msg string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if msg == "" {
		delete(f.fail, mustNormalize(ref))
	} else {
		f.fail[mustNormalize(ref)] = msg
	}
}

// takeCalls returns the calls since the last takeCalls.
func (f *fakeEngine) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func (f *fakeEngine) Pull(ctx context.Context, ref string, auth *container.Auth, progress func(container.PullProgress)) (container.Image, error) {
	f.mu.Lock()
	f.calls = append(f.calls, "pull "+ref)
	f.auths[ref] = auth
	g := f.gate[ref]
	f.mu.Unlock()
	if g != nil {
		progress(container.PullProgress{Current: 5, Total: 10, Layers: 1, Status: "Downloading"})
		select {
		case <-g:
		case <-ctx.Done():
			return container.Image{}, fmt.Errorf("%w: %s: %v", container.ErrPull, ref, ctx.Err())
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if msg := f.fail[ref]; msg != "" {
		return container.Image{}, fmt.Errorf("%w: %s: %s", container.ErrPull, ref, msg)
	}
	img, ok := f.remote[ref]
	if !ok {
		return container.Image{}, fmt.Errorf("%w: %s: manifest unknown", container.ErrPull, ref)
	}
	f.images[ref] = img
	return img, nil
}

func (f *fakeEngine) InspectImage(_ context.Context, ref string) (container.Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.lookErr != nil {
		return container.Image{}, f.lookErr
	}
	img, ok := f.images[ref]
	if !ok {
		return container.Image{}, fmt.Errorf("%w: %s", container.ErrImageNotFound, ref)
	}
	return img, nil
}

func (f *fakeEngine) RemoveImage(_ context.Context, ref string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "remove "+ref)
	img, ok := f.images[ref]
	if !ok {
		return nil
	}
	if f.users[img.ID] > 0 {
		return fmt.Errorf("remove image %s: conflict: image is being used by a container", ref)
	}
	delete(f.images, ref)
	return nil
}

func (f *fakeEngine) ImageUsers(context.Context) (map[string]int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.usersErr != nil {
		return nil, f.usersErr
	}
	return maps.Clone(f.users), nil
}

var errEngineDown = errors.New("no container engine answers")

// harness runs a Manager on a fakeEngine and a FakeClock inside a synctest bubble: every step
// ends with synctest.Wait, so the Run loop has done all it can before the test looks.
type harness struct {
	t       *testing.T
	dir     string
	eng     *fakeEngine
	clk     *testutil.FakeClock
	m       *Manager
	changes atomic.Int64
	cancel  context.CancelFunc
	done    chan error
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func newHarness(t *testing.T, dir string, eng *fakeEngine, clk *testutil.FakeClock) *harness {
	t.Helper()
	h := &harness{t: t, dir: dir, eng: eng, clk: clk}
	m, err := New(Config{
		Dir: dir, Engine: eng, Clock: clk,
		Logger:   slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		OnChange: func() { h.changes.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	h.m = m
	return h
}

// run starts Run; stop ends it (the test must call it before its bubble ends).
func (h *harness) run() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.m.Run(ctx) }()
	synctest.Wait()
}

func (h *harness) stop() {
	h.t.Helper()
	h.cancel()
	if err := <-h.done; err != nil {
		h.t.Errorf("Run: %v", err)
	}
}

func (h *harness) set(caches ...Cache) {
	h.m.Set(caches)
	synctest.Wait()
}

func (h *harness) touch(image string) {
	h.m.Touch(image)
	synctest.Wait()
}

func (h *harness) advance(d time.Duration) {
	h.clk.Advance(d)
	synctest.Wait()
}

func (h *harness) cache(name string) CacheStatus {
	h.t.Helper()
	for _, c := range h.m.Statuses() {
		if c.Name == name {
			return c
		}
	}
	h.t.Fatalf("no cache %q in %+v", name, h.m.Statuses())
	return CacheStatus{}
}

func (h *harness) image(cache, image string) ImageStatus {
	h.t.Helper()
	for _, im := range h.cache(cache).Images {
		if im.Image == image {
			return im
		}
	}
	h.t.Fatalf("no image %q in cache %q", image, cache)
	return ImageStatus{}
}

func (h *harness) expectCalls(want ...string) {
	h.t.Helper()
	if got := h.eng.takeCalls(); !slices.Equal(got, want) {
		h.t.Errorf("engine calls %q, want %q", got, want)
	}
}

// inBubble runs f in a synctest bubble with a fresh engine and clock, and a harness over dir
// (a new temporary directory when empty).
func inBubble(t *testing.T, f func(t *testing.T, h *harness)) {
	t.Helper()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		f(t, newHarness(t, dir, newFakeEngine(), testutil.NewFakeClock(t0)))
	})
}
