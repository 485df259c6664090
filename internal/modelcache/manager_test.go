package modelcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/infera-dev/infera/internal/fluid"
	"github.com/infera-dev/infera/internal/testutil"
)

// The Manager's tests run in a testing/synctest bubble on a testutil.FakeClock: synctest.Wait
// lets every goroutine of the Manager settle (fetches blocked on a fake's gate, the loop on its
// channel), and the clock moves only when a test advances it. synctest.Test fails a test whose
// goroutines are left blocked, so a leak fails the test.

const kib = 1 << 10

var mgrStart = time.Date(2026, 3, 1, 0, 0, 30, 0, time.UTC)

// fakeListSource is a bucket prefix held in memory.
type fakeListSource struct {
	name string

	mu      sync.Mutex
	objects map[string][]byte
	etags   map[string]string
	listErr error
	lists   int
}

func newFakeListSource(name string, files map[string]int) *fakeListSource {
	s := &fakeListSource{name: name, objects: map[string][]byte{}, etags: map[string]string{}}
	for k, n := range files {
		s.put(k, n, "v1")
	}
	return s
}

func (s *fakeListSource) put(key string, n int, etag string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objects[key] = bytes.Repeat([]byte{byte(len(key) + len(etag))}, n)
	s.etags[key] = etag
}

func (s *fakeListSource) setListErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.listErr = err
}

func (s *fakeListSource) listCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lists
}

func (s *fakeListSource) String() string { return s.name }

func (s *fakeListSource) List(ctx context.Context) ([]Object, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lists++
	if s.listErr != nil {
		return nil, s.listErr
	}
	var out []Object
	for k, b := range s.objects {
		out = append(out, Object{Key: k, Size: int64(len(b)), ETag: s.etags[k]})
	}
	slices.SortFunc(out, func(a, b Object) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

func (s *fakeListSource) Stat(ctx context.Context, key string) (Object, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objects[key]
	if !ok {
		return Object{}, ErrNotFound
	}
	return Object{Key: key, Size: int64(len(b)), ETag: s.etags[key]}, nil
}

func (s *fakeListSource) ReadRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objects[key]
	if !ok {
		return nil, ErrNotFound
	}
	b = b[off:]
	if n >= 0 {
		b = b[:n]
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

// fakeLocalSource is a local directory, served in place.
type fakeLocalSource struct {
	fakeListSource
	dir string
}

func (s *fakeLocalSource) Dir() string { return s.dir }

// fakeFileFetcher writes an object's bytes to dst (through a temporary file, as the real
// Fetcher does) and records each fetch. A key with a gate reports half its bytes, then waits
// for the gate to close; a key with failures left fails with the next; leftover bytes are left
// beside each file, as a crashed fetch's partial file would be.
type fakeFileFetcher struct {
	mu       sync.Mutex
	calls    []string
	gates    map[string]chan struct{}
	failures map[string][]error
	leftover int
}

func newFakeFileFetcher() *fakeFileFetcher {
	return &fakeFileFetcher{gates: map[string]chan struct{}{}, failures: map[string][]error{}}
}

func (f *fakeFileFetcher) gate(key string) chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{})
	f.gates[key] = ch
	return ch
}

func (f *fakeFileFetcher) fail(key string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failures[key] = append(f.failures[key], errs...)
}

func (f *fakeFileFetcher) fetched() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeFileFetcher) Fetch(ctx context.Context, src Source, obj Object, dst string, progress func(int64)) error {
	f.mu.Lock()
	f.calls = append(f.calls, obj.Key)
	gate := f.gates[obj.Key]
	var err error
	if errs := f.failures[obj.Key]; len(errs) > 0 {
		err, f.failures[obj.Key] = errs[0], errs[1:]
	}
	f.mu.Unlock()
	if err != nil {
		return err
	}
	rc, err := src.ReadRange(ctx, obj.Key, 0, -1)
	if err != nil {
		return err
	}
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return err
	}
	half := int64(len(data)) / 2
	if gate != nil {
		progress(half)
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
		progress(int64(len(data)) - half)
	} else {
		progress(int64(len(data)))
	}
	f.mu.Lock()
	leftover := f.leftover
	f.mu.Unlock()
	if leftover > 0 {
		if err := os.WriteFile(dst+".fake-leftover", make([]byte, leftover), 0o644); err != nil {
			return err
		}
	}
	tmp := dst + ".fake-partial"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// mgrRig is a Manager on a FakeClock with fake sources (by mount point) and a fake fetcher.
type mgrRig struct {
	t       *testing.T
	root    string
	clk     *testutil.FakeClock
	fetcher *fakeFileFetcher
	sources map[string]Source
	m       *Manager
	cancel  context.CancelFunc
	done    chan error

	mu      sync.Mutex
	changes []string
	secrets map[string]map[string]string // by mount point, as NewSource got them
}

// newMgrRig starts a Manager over root (a new directory when ""), in a synctest bubble.
func newMgrRig(t *testing.T, root string, sources map[string]Source, cfg func(*Config)) *mgrRig {
	t.Helper()
	if root == "" {
		root = t.TempDir()
	}
	r := &mgrRig{
		t: t, root: root, clk: testutil.NewFakeClock(mgrStart), fetcher: newFakeFileFetcher(),
		sources: sources, secrets: map[string]map[string]string{},
	}
	c := Config{
		Root:  root,
		Clock: r.clk,
		NewSource: func(m fluid.Mount, options, secrets map[string]string) (Source, error) {
			r.mu.Lock()
			r.secrets[m.MountPoint] = secrets
			r.mu.Unlock()
			if s, ok := r.sources[m.MountPoint]; ok {
				return s, nil
			}
			return nil, fmt.Errorf("no fake source for %s", m.MountPoint)
		},
		Fetcher:   r.fetcher,
		OnChange:  func(ns, name string) { r.mu.Lock(); r.changes = append(r.changes, ns+"/"+name); r.mu.Unlock() },
		DiskSpace: func(string) (int64, int64, error) { return 10 << 30, 20 << 30, nil },
	}
	if cfg != nil {
		cfg(&c)
	}
	m, err := NewManager(c)
	if err != nil {
		t.Fatal(err)
	}
	r.m = m
	return r
}

// run starts the Manager's Run; stop ends it and checks it returned nil. A test that fails
// before stop has it stopped at cleanup, so that its failure is not buried under goroutines
// left blocked in the bubble.
func (r *mgrRig) run() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	go func() { r.done <- r.m.Run(ctx) }()
	r.t.Cleanup(func() {
		if r.done != nil {
			r.stop()
		}
	})
}

func (r *mgrRig) stop() {
	r.t.Helper()
	r.cancel()
	if err := <-r.done; err != nil {
		r.t.Errorf("Run: %v", err)
	}
	r.done = nil
}

func (r *mgrRig) status(name string) DatasetStatus {
	r.t.Helper()
	st, ok := r.m.Status("default", name)
	if !ok {
		r.t.Fatalf("no status for default/%s", name)
	}
	return st
}

func (r *mgrRig) wantPhase(name string, p Phase) DatasetStatus {
	r.t.Helper()
	st := r.status(name)
	if st.Phase != p {
		r.t.Fatalf("default/%s: phase %s (%s), want %s", name, st.Phase, st.Message, p)
	}
	return st
}

// advance moves the clock and lets the Manager settle.
func (r *mgrRig) advance(d time.Duration) {
	r.clk.Advance(d)
	synctest.Wait()
}

// dataset is a Dataset of one mount per mount point, each at its default path (/name) unless
// the mount point is followed by "=path".
func dataset(name string, mountPoints ...string) *fluid.Dataset {
	d := &fluid.Dataset{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
	for i, mp := range mountPoints {
		mp, p, _ := strings.Cut(mp, "=")
		d.Spec.Mounts = append(d.Spec.Mounts, fluid.Mount{MountPoint: mp, Name: fmt.Sprintf("m%d", i), Path: p})
	}
	return d
}

func spec(d *fluid.Dataset, rt *RuntimeSpec) DatasetSpec {
	return DatasetSpec{Namespace: "default", Name: d.Name, Dataset: d, Runtime: rt}
}

// runtime is a JuiceFS-less runtime (Alluxio: every level used) with the given levels.
func runtime(name string, policy fluid.FuseCleanPolicy, levels ...fluid.Level) *RuntimeSpec {
	return &RuntimeSpec{Kind: fluid.KindAlluxioRuntime, Name: name, CleanPolicy: policy, TieredStore: fluid.TieredStore{Levels: levels}}
}

func level(medium fluid.MediumType, path, quota, high, low string) fluid.Level {
	q := resource.MustParse(quota)
	return fluid.Level{MediumType: medium, Path: path, Quota: &q, High: high, Low: low}
}

func files(prefix string, n, size int) map[string]int {
	out := map[string]int{}
	for i := range n {
		out[fmt.Sprintf("%s%d.bin", prefix, i)] = size
	}
	return out
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func TestManagerPlacementByLevel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem, ssd := t.TempDir(), t.TempDir()
		small := newFakeListSource("s3://b/small", files("w", 2, 32*kib))
		large := newFakeListSource("s3://b/large", files("w", 4, 64*kib))
		r := newMgrRig(t, "", map[string]Source{"s3://b/small": small, "s3://b/large": large}, nil)
		// Listed SSD first: Fluid's order puts MEM first anyway.
		rt := runtime("x", "", level(fluid.MediumSSD, ssd, "1Mi", "", ""), level(fluid.MediumMemory, mem, "128Ki", "", ""))
		r.m.Set([]DatasetSpec{
			spec(dataset("small", "s3://b/small=/"), rt),
			spec(dataset("large", "s3://b/large"), rt),
		})
		r.run()
		synctest.Wait()

		st := r.wantPhase("small", PhaseReady)
		if st.Level != fluid.MediumMemory || st.LevelPath != mem || st.Path != filepath.Join(mem, "default", "small") {
			t.Errorf("small: level %s at %s, path %s; want MEM at %s", st.Level, st.LevelPath, st.Path, mem)
		}
		if !exists(filepath.Join(st.Path, "w0.bin")) {
			t.Errorf("small: mount at path / should put w0.bin at the dataset's root")
		}
		st = r.wantPhase("large", PhaseReady)
		if st.Level != fluid.MediumSSD || st.LevelPath != ssd {
			t.Errorf("large: level %s at %s, want SSD at %s (256 KiB does not fit MEM's 128 KiB)", st.Level, st.LevelPath, ssd)
		}
		// The mount has no path: Fluid shows it at /{name}.
		if !exists(filepath.Join(st.Path, "m0", "w3.bin")) {
			t.Errorf("large: want its files under /m0, the mount's name")
		}
		if st.Files != 4 || st.FilesDone != 4 || st.Total != 256*kib || st.Done != st.Total || st.CachedBytes < 256*kib {
			t.Errorf("large: %+v", st)
		}
		var names []string
		for _, st := range r.m.Statuses() {
			names = append(names, st.Namespace+"/"+st.Name+" "+string(st.Phase))
		}
		if want := []string{"default/large Ready", "default/small Ready"}; !slices.Equal(names, want) {
			t.Errorf("Statuses: %v, want %v", names, want)
		}
		r.stop()
	})
}

func TestManagerTooLarge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeListSource("s3://b/big", files("part", 3, 100*kib))
		r := newMgrRig(t, "", map[string]Source{"s3://b/big": src}, nil)
		ds := dataset("big", "s3://b/big")
		r.m.Set([]DatasetSpec{spec(ds, runtime("x", "", level(fluid.MediumSSD, t.TempDir(), "100Ki", "", "")))})
		r.run()
		synctest.Wait()

		st := r.wantPhase("big", PhaseFailed)
		want := "dataset default/big needs 300 KiB; runtime x's largest level SSD holds 100 KiB (quota)"
		if !strings.Contains(st.Message, want) {
			t.Errorf("message %q, want it to say %q", st.Message, want)
		}
		_, err := r.m.Path("default", "big")
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), want) {
			t.Errorf("Path: %v, want ErrUnavailable and ErrTooLarge saying %q", err, want)
		}
		// Not retried: time passes, nothing is listed again.
		lists := src.listCount()
		r.advance(time.Hour)
		if n := src.listCount(); n != lists || len(r.fetcher.fetched()) != 0 {
			t.Errorf("a dataset too large was tried again: %d lists (was %d), fetched %v", n, lists, r.fetcher.fetched())
		}
		// A bigger quota is a changed spec: it is fetched.
		r.m.Set([]DatasetSpec{spec(ds, runtime("x", "", level(fluid.MediumSSD, t.TempDir(), "1Mi", "", "")))})
		synctest.Wait()
		r.wantPhase("big", PhaseReady)
		r.stop()
	})
}

// TestManagerEviction fills a level, then checks eviction at its watermarks: least recently
// used first, never a pinned dataset, and an evicted dataset fetched again when asked for.
func TestManagerEviction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		srcs := map[string]Source{}
		for _, n := range []string{"a", "b", "c"} {
			srcs["s3://b/"+n] = newFakeListSource("s3://b/"+n, files(n, 4, 64*kib))
		}
		r := newMgrRig(t, "", srcs, nil)
		// Two 256 KiB datasets fit in 600 KiB; a third takes the level past high (95%) and
		// eviction brings it to low (90%): one dataset must go.
		rt := runtime("x", "", level(fluid.MediumSSD, dir, "600Ki", "0.95", "0.9"))
		specs := func(names ...string) []DatasetSpec {
			var out []DatasetSpec
			for _, n := range names {
				out = append(out, spec(dataset(n, "s3://b/"+n), rt))
			}
			return out
		}
		r.run()
		r.m.Set(specs("a"))
		synctest.Wait()
		r.advance(time.Minute)
		r.m.Set(specs("a", "b"))
		synctest.Wait()
		r.wantPhase("a", PhaseReady)
		r.wantPhase("b", PhaseReady)

		// a is used after b: b is now the least recently used.
		r.advance(time.Minute)
		r.m.Pin("default", "a", "replica-1")
		r.m.Unpin("default", "a", "replica-1")
		r.advance(time.Minute)
		r.m.Set(specs("a", "b", "c"))
		synctest.Wait()
		r.wantPhase("c", PhaseReady)
		r.wantPhase("a", PhaseReady)
		st := r.wantPhase("b", PhasePending)
		if !strings.Contains(st.Message, "evicted from SSD") || !strings.Contains(st.Message, "default/c") {
			t.Errorf("b: message %q, want it evicted for default/c", st.Message)
		}
		if exists(filepath.Join(dir, "default", "b")) {
			t.Errorf("b's files are still on disk")
		}

		// a is pinned (a replica mounts it); then Path asks for b, which is fetched again: c,
		// the least recently used unpinned dataset, makes room, although a was used before c.
		r.m.Pin("default", "a", "replica-2")
		synctest.Wait()
		if _, err := r.m.Path("default", "b"); !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), "fetching again") {
			t.Errorf("Path(b) = %v, want ErrNotReady, fetching again", err)
		}
		synctest.Wait()
		r.wantPhase("b", PhaseReady)
		r.wantPhase("a", PhaseReady)
		r.wantPhase("c", PhasePending)
		if !exists(filepath.Join(dir, "default", "a", "m0", "a0.bin")) {
			t.Errorf("pinned a lost its files")
		}

		// With a and b both pinned, c has no room: it waits, and gets it when b is released.
		r.m.Pin("default", "b", "replica-3")
		if _, err := r.m.Path("default", "c"); !errors.Is(err, ErrNotReady) {
			t.Errorf("Path(c) = %v, want ErrNotReady", err)
		}
		synctest.Wait()
		st = r.wantPhase("c", PhasePending)
		if !strings.Contains(st.Message, "in use") || !strings.Contains(st.Message, "default/a, default/b") {
			t.Errorf("c: message %q, want it waiting for room held by default/a, default/b", st.Message)
		}
		r.m.Unpin("default", "b", "replica-3")
		synctest.Wait()
		r.wantPhase("c", PhaseReady)
		r.wantPhase("b", PhasePending)
		r.wantPhase("a", PhaseReady)
		r.stop()
	})
}

// TestManagerEvictionAfterFetch checks the watermarks once a fetch completes: a dataset takes
// more on disk than was reserved for it (here, files left beside its own), taking the level
// past high, and the least recently used other dataset is evicted.
func TestManagerEvictionAfterFetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		srcs := map[string]Source{
			"s3://b/a": newFakeListSource("s3://b/a", files("a", 4, 64*kib)),
			"s3://b/b": newFakeListSource("s3://b/b", files("b", 4, 64*kib)),
		}
		r := newMgrRig(t, "", srcs, nil)
		rt := runtime("x", "", level(fluid.MediumSSD, dir, "600Ki", "0.95", "0.9"))
		r.run()
		r.m.Set([]DatasetSpec{spec(dataset("a", "s3://b/a"), rt)})
		synctest.Wait()
		r.advance(time.Minute)
		r.fetcher.mu.Lock()
		r.fetcher.leftover = 32 * kib
		r.fetcher.mu.Unlock()
		r.m.Set([]DatasetSpec{spec(dataset("a", "s3://b/a"), rt), spec(dataset("b", "s3://b/b"), rt)})
		synctest.Wait()
		st := r.wantPhase("b", PhaseReady)
		if st.CachedBytes < 384*kib {
			t.Errorf("b takes %d bytes on disk, want its leftovers counted", st.CachedBytes)
		}
		if st := r.wantPhase("a", PhasePending); !strings.Contains(st.Message, "to make room for default/b") {
			t.Errorf("a: %q", st.Message)
		}
		r.stop()
	})
}

// TestManagerRestart checks the index: a new Manager on the same root serves what the old one
// cached with no fetch and no listing, and one whose file was damaged fetches only that file.
func TestManagerRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		root := t.TempDir()
		src := newFakeListSource("s3://b/m", files("f", 3, 16*kib))
		srcs := map[string]Source{"s3://b/m": src}
		ds := spec(dataset("m", "s3://b/m"), nil)

		r := newMgrRig(t, root, srcs, nil)
		r.run()
		r.m.Set([]DatasetSpec{ds})
		synctest.Wait()
		first := r.wantPhase("m", PhaseReady)
		if first.Level != fluid.MediumSSD || first.LevelPath != root {
			t.Errorf("a dataset with no runtime: level %s at %s, want the default store's SSD at %s", first.Level, first.LevelPath, root)
		}
		r.stop()
		lists := src.listCount()

		// Restart: a hit.
		r = newMgrRig(t, root, srcs, nil)
		r.run()
		r.m.Set([]DatasetSpec{ds})
		synctest.Wait()
		st := r.wantPhase("m", PhaseReady)
		if got := r.fetcher.fetched(); len(got) != 0 || src.listCount() != lists {
			t.Errorf("after a restart: fetched %v, listed %d times (was %d); want a hit", got, src.listCount(), lists)
		}
		if st.Path != first.Path {
			t.Errorf("path %s, want %s", st.Path, first.Path)
		}
		r.stop()

		// A file truncated behind the cache's back: its entry is mended, the file fetched again.
		if err := os.Truncate(filepath.Join(first.Path, "m0", "f1.bin"), 100); err != nil {
			t.Fatal(err)
		}
		r = newMgrRig(t, root, srcs, nil)
		r.run()
		r.m.Set([]DatasetSpec{ds})
		synctest.Wait()
		r.wantPhase("m", PhaseReady)
		if got := r.fetcher.fetched(); !slices.Equal(got, []string{"f1.bin"}) {
			t.Errorf("fetched %v, want only f1.bin", got)
		}
		if fi, err := os.Stat(filepath.Join(first.Path, "m0", "f1.bin")); err != nil || fi.Size() != 16*kib {
			t.Errorf("f1.bin: %v %v", fi, err)
		}
		r.stop()

		// The whole directory gone: the entry is dropped and everything fetched again.
		if err := os.RemoveAll(first.Path); err != nil {
			t.Fatal(err)
		}
		r = newMgrRig(t, root, srcs, nil)
		r.run()
		r.m.Set([]DatasetSpec{ds})
		synctest.Wait()
		r.wantPhase("m", PhaseReady)
		if got := r.fetcher.fetched(); len(got) != 3 {
			t.Errorf("fetched %v, want all three files", got)
		}
		r.stop()
	})
}

func TestManagerCleanPolicy(t *testing.T) {
	tests := []struct {
		policy   fluid.FuseCleanPolicy
		kept     bool // files stay after the dataset is deleted
		pinned   bool // a replica has it mounted when it is deleted
		released bool // files still there once the replica lets go
	}{
		{policy: "", kept: false},
		{policy: fluid.CleanPolicyOnRuntimeDeleted, kept: false},
		{policy: fluid.CleanPolicyOnRuntimeDeleted, pinned: true, kept: true, released: false},
		{policy: fluid.CleanPolicyOnDemand, kept: true},
		{policy: fluid.CleanPolicyOnDemand, pinned: true, kept: true, released: true},
		{policy: fluid.CleanPolicyOnFuseChanged, kept: true},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("%s/pinned=%v", cmpOr(string(tt.policy), "default"), tt.pinned)
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				dir := t.TempDir()
				src := newFakeListSource("s3://b/m", files("f", 2, 8*kib))
				r := newMgrRig(t, "", map[string]Source{"s3://b/m": src}, nil)
				ds := spec(dataset("m", "s3://b/m"), runtime("m", tt.policy, level(fluid.MediumSSD, dir, "1Mi", "", "")))
				r.run()
				r.m.Set([]DatasetSpec{ds})
				synctest.Wait()
				path := r.wantPhase("m", PhaseReady).Path
				if tt.pinned {
					r.m.Pin("default", "m", "replica")
				}
				r.m.Set(nil)
				synctest.Wait()
				if got := exists(path); got != tt.kept {
					t.Fatalf("after delete: files there = %v, want %v", got, tt.kept)
				}
				if _, ok := r.m.Status("default", "m"); ok {
					t.Errorf("a deleted dataset still has a status")
				}
				if tt.pinned {
					r.m.Unpin("default", "m", "replica")
					synctest.Wait()
					if got := exists(path); got != tt.released {
						t.Fatalf("after release: files there = %v, want %v", got, tt.released)
					}
				}
				// Coming back: a hit where the files were kept, a fetch where they were not.
				present, before := exists(path), len(r.fetcher.fetched())
				r.m.Set([]DatasetSpec{ds})
				synctest.Wait()
				r.wantPhase("m", PhaseReady)
				if refetched := len(r.fetcher.fetched()) > before; refetched == present {
					t.Errorf("came back with its files there = %v: fetched again = %v", present, refetched)
				}
				r.stop()
			})
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func TestManagerLocalInPlace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		nas := t.TempDir()
		if err := os.WriteFile(filepath.Join(nas, "config.json"), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
		remote := newFakeListSource("s3://b/extra", files("e", 1, 4*kib))
		srcs := map[string]Source{
			"local://" + nas: &fakeLocalSource{fakeListSource: fakeListSource{name: "local://" + nas}, dir: nas},
			"s3://b/extra":   remote,
		}
		r := newMgrRig(t, "", srcs, nil)
		r.run()
		r.m.Set([]DatasetSpec{
			spec(dataset("root", "local://"+nas+"=/"), nil),
			spec(dataset("named", "local://"+nas), nil),
			spec(dataset("mixed", "local://"+nas+"=/models", "s3://b/extra=/extra"), nil),
		})
		synctest.Wait()

		st := r.wantPhase("root", PhaseReady)
		if st.Path != nas || !st.InPlace || st.Level != "" {
			t.Errorf("root: path %s in place %v level %q, want %s served in place", st.Path, st.InPlace, st.Level, nas)
		}
		// At /m0 (its name, no path): a directory with a link at m0, as Fluid lays it out.
		st = r.wantPhase("named", PhaseReady)
		if !st.InPlace || !exists(filepath.Join(st.Path, "m0", "config.json")) {
			t.Errorf("named: path %s, want m0/config.json through a link", st.Path)
		}
		if target, err := os.Readlink(filepath.Join(st.Path, "m0")); err != nil || target != nas {
			t.Errorf("named: m0 links to %q (%v), want %s", target, err, nas)
		}
		st = r.wantPhase("mixed", PhaseReady)
		if st.InPlace || !exists(filepath.Join(st.Path, "models", "config.json")) || !exists(filepath.Join(st.Path, "extra", "e0.bin")) {
			t.Errorf("mixed: path %s, want models/ linked and extra/e0.bin fetched", st.Path)
		}
		if got := r.fetcher.fetched(); !slices.Equal(got, []string{"e0.bin"}) {
			t.Errorf("fetched %v, want only the remote mount's file: local mounts are never copied", got)
		}
		r.stop()
	})
}

func TestManagerProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeListSource("s3://b/m", map[string]int{"a.bin": 4 << 20, "b.bin": 4 << 20})
		r := newMgrRig(t, "", map[string]Source{"s3://b/m": src}, nil)
		ga, gb := r.fetcher.gate("a.bin"), r.fetcher.gate("b.bin")
		r.run()
		r.m.Set([]DatasetSpec{spec(dataset("m", "s3://b/m"), nil)})
		synctest.Wait()

		// Both files are half fetched, all of it at the start: 4 MiB in 2 s is 2.1 MB/s, and the
		// 4 MiB left take 2 s more.
		r.advance(2 * time.Second)
		st := r.wantPhase("m", PhaseFetching)
		if st.Done != 4<<20 || st.Total != 8<<20 || st.Files != 2 || st.FilesDone != 0 {
			t.Errorf("progress %d of %d, %d of %d files", st.Done, st.Total, st.FilesDone, st.Files)
		}
		if st.Rate != 2<<20 || st.ETA != 2*time.Second {
			t.Errorf("rate %.0f B/s, ETA %s; want %d B/s, 2s", st.Rate, st.ETA, 2<<20)
		}
		want := "fetching 4 MiB of 8 MiB, 2.1 MB/s, ETA 2s"
		if st.Message != want {
			t.Errorf("message %q, want %q", st.Message, want)
		}
		_, err := r.m.Path("default", "m")
		if !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), want) {
			t.Errorf("Path: %v, want ErrNotReady with %q", err, want)
		}

		// Nothing arrives for longer than the window: no rate, no ETA.
		r.advance(10 * time.Second)
		if st := r.status("m"); st.Rate != 0 || st.ETA != 0 || st.Message != "fetching 4 MiB of 8 MiB" {
			t.Errorf("stalled: rate %.0f, ETA %s, message %q", st.Rate, st.ETA, st.Message)
		}
		close(ga)
		synctest.Wait()
		if st := r.status("m"); st.FilesDone != 1 || st.Done != 6<<20 {
			t.Errorf("one file done: %d files, %d bytes", st.FilesDone, st.Done)
		}
		close(gb)
		synctest.Wait()
		if st := r.wantPhase("m", PhaseReady); st.Message != "" || st.Done != st.Total {
			t.Errorf("ready: %+v", st)
		}
		r.mu.Lock()
		changes := slices.Clone(r.changes)
		r.mu.Unlock()
		if len(changes) < 2 || changes[len(changes)-1] != "default/m" {
			t.Errorf("OnChange calls %v, want default/m for each phase change", changes)
		}
		r.stop()
	})
}

// TestManagerRetry checks fetch failures: each is reported, with the source's error, and tried
// again after a back-off on the clock (1 s, then 2 s) until it succeeds.
func TestManagerRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeListSource("s3://b/p at http://127.0.0.1:9000", map[string]int{"w.bin": 4 * kib})
		r := newMgrRig(t, "", map[string]Source{"s3://b/p": src}, nil)
		denied := fmt.Errorf("%w (403)", ErrAccessDenied)
		r.fetcher.fail("w.bin", denied, denied)
		r.run()
		r.m.Set([]DatasetSpec{spec(dataset("m", "s3://b/p"), nil)})
		synctest.Wait()

		st := r.wantPhase("m", PhaseFailed)
		want := "s3://b/p at http://127.0.0.1:9000: access denied (403)"
		if !strings.HasPrefix(st.Message, want) || st.Attempts != 1 || !st.NextRetry.Equal(mgrStart.Add(time.Second)) {
			t.Errorf("after one failure: %q, attempts %d, next %s; want %q, 1, +1s", st.Message, st.Attempts, st.NextRetry, want)
		}
		if _, err := r.m.Path("default", "m"); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), want) {
			t.Errorf("Path: %v, want ErrUnavailable with the source's error", err)
		}
		r.advance(999 * time.Millisecond)
		if got := len(r.fetcher.fetched()); got != 1 {
			t.Fatalf("%d fetches before the back-off passed, want 1", got)
		}
		r.advance(time.Millisecond)
		st = r.wantPhase("m", PhaseFailed)
		if st.Attempts != 2 || !st.NextRetry.Equal(mgrStart.Add(3*time.Second)) {
			t.Errorf("after two failures: attempts %d, next %s, want 2 and +3s (a 2 s back-off)", st.Attempts, st.NextRetry)
		}
		r.advance(2 * time.Second)
		st = r.wantPhase("m", PhaseReady)
		if st.Attempts != 0 || !st.NextRetry.IsZero() || len(r.fetcher.fetched()) != 3 {
			t.Errorf("ready: attempts %d, next %s, fetches %v", st.Attempts, st.NextRetry, r.fetcher.fetched())
		}
		r.stop()
	})
}

func TestManagerSecrets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeListSource("s3://b/p", map[string]int{"w.bin": 4 * kib})
		r := newMgrRig(t, "", map[string]Source{"s3://b/p": src}, nil)
		ds := dataset("m", "s3://b/p")
		ds.Spec.SharedEncryptOptions = []fluid.EncryptOption{{Name: "aws.accessKeyId", ValueFrom: fluid.EncryptOptionSource{SecretKeyRef: fluid.SecretKeySelector{Name: "keys", Key: "id"}}}}
		ds.Spec.Mounts[0].EncryptOptions = []fluid.EncryptOption{{Name: "aws.secretKey", ValueFrom: fluid.EncryptOptionSource{SecretKeyRef: fluid.SecretKeySelector{Name: "keys", Key: "secret"}}}}
		s := spec(ds, nil)
		s.Secrets = map[string]string{"aws.accessKeyId": "AKIA-fake"}
		r.run()
		r.m.Set([]DatasetSpec{s})
		synctest.Wait()
		st := r.wantPhase("m", PhaseFailed)
		if !strings.Contains(st.Message, "aws.secretKey") || strings.Contains(st.Message, "AKIA-fake") {
			t.Errorf("message %q, want the unresolved option named and no secret value", st.Message)
		}
		// A spec error waits for a change, which here is the resolved secret.
		s.Secrets = map[string]string{"aws.accessKeyId": "AKIA-fake", "aws.secretKey": "shh"}
		r.m.Set([]DatasetSpec{s})
		synctest.Wait()
		r.wantPhase("m", PhaseReady)
		r.mu.Lock()
		got := r.secrets["s3://b/p"]
		r.mu.Unlock()
		if got["aws.accessKeyId"] != "AKIA-fake" || got["aws.secretKey"] != "shh" || len(got) != 2 {
			t.Errorf("NewSource got secrets %v", got)
		}
		// Rotating a secret keeps the cache: no fetch.
		before := len(r.fetcher.fetched())
		s.Secrets = map[string]string{"aws.accessKeyId": "AKIA-new", "aws.secretKey": "shh2"}
		r.m.Set([]DatasetSpec{s})
		synctest.Wait()
		r.wantPhase("m", PhaseReady)
		if len(r.fetcher.fetched()) != before {
			t.Errorf("a rotated secret fetched the dataset again")
		}
		r.stop()
	})
}

// The package's Fetcher is what the Manager runs in infera.
var _ ObjectFetcher = (*Fetcher)(nil)

// TestManagerRealFetcher runs the Manager with the package's Fetcher and HTTPSource against a
// loopback HTTP server, on the wall clock: the file arrives verified, where Fluid lays it out.
func TestManagerRealFetcher(t *testing.T) {
	data := bytes.Repeat([]byte("infera"), 200_000)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		w.Header().Set("ETag", `"v1"`)
		http.ServeContent(w, req, "model.bin", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	var mu sync.Mutex
	var opened []*HTTPSource
	changed := make(chan struct{}, 1)
	m, err := NewManager(Config{
		Root: t.TempDir(),
		NewSource: func(mt fluid.Mount, _, _ map[string]string) (Source, error) {
			s, err := NewHTTPSource(mt.MountPoint, nil)
			if err == nil {
				mu.Lock()
				opened = append(opened, s)
				mu.Unlock()
			}
			return s, err
		},
		Fetcher: &Fetcher{},
		OnChange: func(string, string) {
			select {
			case changed <- struct{}{}:
			default:
			}
		},
		DiskSpace: func(string) (int64, int64, error) { return 10 << 30, 20 << 30, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, s := range opened {
			s.CloseIdleConnections()
		}
	}()
	m.Set([]DatasetSpec{spec(dataset("m", srv.URL+"/models/model.bin"), nil)})
	deadline := time.After(30 * time.Second)
	for {
		st, _ := m.Status("default", "m")
		if st.Phase == PhaseReady {
			got, err := os.ReadFile(filepath.Join(st.Path, "m0", "model.bin"))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("model.bin: %d bytes, %v; want the server's %d", len(got), err, len(data))
			}
			if st.Done != int64(len(data)) || st.CachedBytes < int64(len(data)) {
				t.Errorf("status %+v", st)
			}
			return
		}
		if st.Phase == PhaseFailed {
			t.Fatalf("failed: %s", st.Message)
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("not Ready within 30s: %+v", st)
		}
	}
}
