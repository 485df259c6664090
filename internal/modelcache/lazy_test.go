package modelcache

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/fluid"
)

// slowSource is an in-memory Source whose bodies flow at rate bytes per second per request, as
// a link with a per-connection limit serves them. The rate is the emulated link, not a wait
// for state.
type slowSource struct {
	objs map[string][]byte
	rate int64

	mu     sync.Mutex
	ranges []string // "key@off" of each ReadRange, in order
}

func (s *slowSource) List(context.Context) ([]Object, error) {
	var out []Object
	for k, b := range s.objs {
		out = append(out, Object{Key: k, Size: int64(len(b)), ETag: "v1"})
	}
	sortObjects(out)
	return out, nil
}

func sortObjects(o []Object) {
	for i := range o {
		for j := i + 1; j < len(o); j++ {
			if o[j].Key < o[i].Key {
				o[i], o[j] = o[j], o[i]
			}
		}
	}
}

func (s *slowSource) Stat(_ context.Context, key string) (Object, error) {
	b, ok := s.objs[key]
	if !ok {
		return Object{}, ErrNotFound
	}
	return Object{Key: key, Size: int64(len(b)), ETag: "v1"}, nil
}

func (s *slowSource) ReadRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	b, ok := s.objs[key]
	if !ok {
		return nil, ErrNotFound
	}
	if n < 0 || off+n > int64(len(b)) {
		n = int64(len(b)) - off
	}
	s.mu.Lock()
	s.ranges = append(s.ranges, fmt.Sprintf("%s@%d", key, off))
	s.mu.Unlock()
	return io.NopCloser(&slowReader{ctx: ctx, b: b[off : off+n], rate: s.rate}), nil
}

func (s *slowSource) String() string { return "slow://test" }

type slowReader struct {
	ctx  context.Context
	b    []byte
	rate int64
}

func (r *slowReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	const piece = 64 << 10
	n := min(len(p), len(r.b), piece)
	t := time.NewTimer(time.Duration(int64(n) * int64(time.Second) / r.rate))
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.ctx.Done():
		return 0, r.ctx.Err()
	}
	n = copy(p, r.b[:n])
	r.b = r.b[n:]
	return n, nil
}

func randomData(n int, seed byte) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// safetensors is a file in the format: 8-byte length, a JSON header, then data.
func safetensors(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	return append(append(b, header...), data...)
}

// lazyRig is a Manager with the package's Fetcher on the wall clock (FUSE cannot run in a
// synctest bubble) over a slowSource.
type lazyRig struct {
	t      *testing.T
	m      *Manager
	src    *slowSource
	change chan struct{}
	cancel context.CancelFunc
	done   chan error
}

func newLazyRig(t *testing.T, objs map[string][]byte, rate int64, edits ...func(*Config)) *lazyRig {
	t.Helper()
	checkLeaks(t)
	if os.Geteuid() != 0 {
		t.Skip("lazy mounts need root")
	}
	r := &lazyRig{t: t, src: &slowSource{objs: objs, rate: rate}, change: make(chan struct{}, 1)}
	cfg := Config{
		Root:             t.TempDir(),
		NewSource:        func(fluid.Mount, map[string]string, map[string]string) (Source, error) { return r.src, nil },
		Fetcher:          &Fetcher{ChunkSize: 1 << 20, Streams: 2},
		FetchConcurrency: 1,
		OnChange: func(string, string) {
			select {
			case r.change <- struct{}{}:
			default:
			}
		},
		DiskSpace: func(string) (int64, int64, error) { return 10 << 30, 20 << 30, nil },
	}
	for _, e := range edits {
		e(&cfg)
	}
	m, err := NewManager(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Lazy() && !cfg.NoLazy {
		t.Skip("no FUSE here")
	}
	r.m = m
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan error, 1)
	go func() { r.done <- m.Run(ctx) }()
	t.Cleanup(r.stop)
	m.Set([]DatasetSpec{spec(dataset("m", "s3://bucket/model"), nil)})
	return r
}

func (r *lazyRig) stop() {
	if r.done == nil {
		return
	}
	r.cancel()
	if err := <-r.done; err != nil {
		r.t.Errorf("Run: %v", err)
	}
	r.done = nil
}

// checkLeaks fails the test when goroutines running this package's code outlive it.
func checkLeaks(t *testing.T) {
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			buf := make([]byte, 1<<20)
			buf = buf[:goruntime.Stack(buf, true)]
			var leaked []string
			for g := range strings.SplitSeq(string(buf), "\n\n") {
				if strings.Contains(g, "infera/internal/modelcache.") && !strings.Contains(g, "checkLeaks") {
					leaked = append(leaked, g)
				}
			}
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("goroutines of modelcache left running:\n%s", strings.Join(leaked, "\n\n"))
				return
			}
			time.Sleep(10 * time.Millisecond) // polling for exited goroutines: nothing to wait on
		}
	})
}

// await calls f after every change until it reports true (or fails the test at 60 s).
func (r *lazyRig) await(what string, f func() bool) {
	r.t.Helper()
	deadline := time.After(60 * time.Second)
	for !f() {
		select {
		case <-r.change:
		case <-deadline:
			r.t.Fatalf("%s: not within 60s", what)
		}
	}
}

// lazyPath waits for the dataset's lazy mount.
func (r *lazyRig) lazyPath() string {
	r.t.Helper()
	var dir string
	r.await("lazy path", func() bool {
		p, err := r.m.LazyPath("default", "m")
		if err != nil && !errors.Is(err, ErrNotReady) {
			r.t.Fatal(err)
		}
		dir = p
		return err == nil
	})
	return dir
}

func (r *lazyRig) status() DatasetStatus {
	st, _ := r.m.Status("default", "m")
	return st
}

func TestLazyTailReadJumpsTheQueue(t *testing.T) {
	a := safetensors(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, randomData(8<<20, 1))
	b := randomData(16<<20, 2)
	r := newLazyRig(t, map[string][]byte{"a.safetensors": a, "b.bin": b}, 4<<20) // ~3 s in all
	dir := r.lazyPath()
	r.m.Pin("default", "m", "reader")
	if want := filepath.Join(r.m.cfg.Root, ".lazy", "default", "m"); dir != want {
		t.Fatalf("LazyPath %s, want %s", dir, want)
	}
	if st := r.status(); st.LazyMount != dir || st.Phase != PhaseFetching {
		t.Fatalf("status %+v, want Fetching with the lazy mount", st)
	}
	// Stat shows final sizes at once.
	fi, err := os.Stat(filepath.Join(dir, "m0", "b.bin"))
	if err != nil || fi.Size() != int64(len(b)) {
		t.Fatalf("stat b.bin: %v, %v", fi, err)
	}
	f, err := os.Open(filepath.Join(dir, "m0", "b.bin"))
	if err != nil {
		t.Fatal(err)
	}
	tail := make([]byte, 4096)
	if _, err := f.ReadAt(tail, int64(len(b)-len(tail))); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if !bytes.Equal(tail, b[len(b)-len(tail):]) {
		t.Fatal("tail of b.bin: wrong bytes")
	}
	// The tail came ahead of the queue: b.bin, the last file, is far from fetched.
	if st := r.status(); st.Phase == PhaseReady || st.FilesDone > 1 {
		t.Fatalf("after the tail read: %+v; want the fetch still going", st)
	}
	// The safetensors header was read first of all, before any file's transfer.
	r.src.mu.Lock()
	first := append([]string(nil), r.src.ranges[:2]...)
	r.src.mu.Unlock()
	if first[0] != "a.safetensors@0" || first[1] != "a.safetensors@8" {
		t.Errorf("first ranges %v, want the header of a.safetensors", first)
	}
	r.m.Unpin("default", "m", "reader")
	r.await("Ready", func() bool { return r.status().Phase == PhaseReady })
}

func TestLazyReadersWhileStreamingThenPlain(t *testing.T) {
	a := safetensors(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, randomData(6<<20, 3))
	b := randomData(6<<20+12345, 4)
	objs := map[string][]byte{"a.safetensors": a, "sub/b.bin": b}
	r := newLazyRig(t, objs, 8<<20)
	dir := r.lazyPath()
	r.m.Pin("default", "m", "r1")
	// A replica's file opened while streaming, read again after Ready (the mount is detached).
	early, err := os.Open(filepath.Join(dir, "m0", "a.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 2 {
		wg.Go(func() {
			for _, k := range []string{"a.safetensors", "sub/b.bin"} {
				if i == 1 {
					k = map[string]string{"a.safetensors": "sub/b.bin", "sub/b.bin": "a.safetensors"}[k]
				}
				got, err := os.ReadFile(filepath.Join(dir, "m0", filepath.FromSlash(k)))
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, objs[k]) {
					errs <- fmt.Errorf("reader %d: %s: wrong bytes", i, k)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	r.await("Ready", func() bool { return r.status().Phase == PhaseReady })
	st := r.status()
	if st.LazyMount != dir {
		t.Errorf("Ready and pinned: LazyMount %q, want the mount kept for its holder", st.LazyMount)
	}
	// Ready: the mount is detached, the lazy directory leads to the cache (a new replica gets a
	// plain bind mount), and the file opened before still reads through the mount.
	if target, err := os.Readlink(dir); err != nil || target != st.Path {
		t.Errorf("lazy dir once Ready: link to %q, %v; want %s", target, err, st.Path)
	}
	tail := make([]byte, 1000)
	if _, err := early.ReadAt(tail, int64(len(a)-len(tail))); err != nil || !bytes.Equal(tail, a[len(a)-len(tail):]) {
		t.Errorf("file opened while streaming, read once Ready: %v", err)
	}
	early.Close()
	p, err := r.m.LazyPath("default", "m")
	if err != nil || p != st.Path || p == dir {
		t.Fatalf("LazyPath after Ready: %q, %v; want the plain directory %s", p, err, st.Path)
	}
	// No partial file shows through the plain path.
	err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
		if err == nil && (strings.HasSuffix(path, ".partial") || strings.Contains(path, ".journal")) {
			return fmt.Errorf("%s in the plain directory", path)
		}
		return err
	})
	if err != nil {
		t.Error(err)
	}
	// Released: the mount goes; its directory leads to the plain one.
	r.m.Unpin("default", "m", "r1")
	if st := r.status(); st.LazyMount != "" {
		t.Errorf("released: LazyMount %q, want none", st.LazyMount)
	}
	if target, err := os.Readlink(dir); err != nil || target != st.Path {
		t.Errorf("lazy dir after release: link to %q, %v; want %s", target, err, st.Path)
	}
	got, err := os.ReadFile(filepath.Join(dir, "m0", "sub", "b.bin"))
	if err != nil || !bytes.Equal(got, b) {
		t.Errorf("through the link: %d bytes, %v", len(got), err)
	}
}

// TestLazyMountClosedAtShutdown: Run closes a live mount before it returns.
func TestLazyMountClosedAtShutdown(t *testing.T) {
	r := newLazyRig(t, map[string][]byte{"big.bin": randomData(64<<20, 5)}, 1<<20)
	dir := r.lazyPath()
	r.stop()
	if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Run: %s: %v, want it removed", dir, err)
	}
}

// TestLazyOffIsPath: with lazy mounts off, LazyPath is Path: not ready until cached whole.
func TestLazyOffIsPath(t *testing.T) {
	r := newLazyRig(t, map[string][]byte{"m.bin": randomData(4<<20, 6)}, 4<<20, func(c *Config) { c.NoLazy = true })
	if r.m.Lazy() {
		t.Fatal("Lazy with NoLazy set")
	}
	r.await("Fetching", func() bool { return r.status().Phase == PhaseFetching })
	if p, err := r.m.LazyPath("default", "m"); !errors.Is(err, ErrNotReady) {
		t.Errorf("LazyPath while fetching, lazy off: %q, %v; want ErrNotReady", p, err)
	}
	r.await("Ready", func() bool { return r.status().Phase == PhaseReady })
	if p, err := r.m.LazyPath("default", "m"); err != nil || p != r.status().Path {
		t.Errorf("LazyPath once Ready: %q, %v", p, err)
	}
}

// TestLazyLeftoversRemoved: the mount points a killed run left are cleared at start.
func TestLazyLeftoversRemoved(t *testing.T) {
	root := t.TempDir()
	left := filepath.Join(root, ".lazy", "default", "gone")
	linked := filepath.Join(root, ".lazy", "default", "linked")
	if err := os.MkdirAll(left, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(root, linked); err != nil {
		t.Fatal(err)
	}
	if _, err := NewManager(Config{Root: root, NewSource: NewSource, Fetcher: newFakeFileFetcher(), NoLazy: true,
		DiskSpace: func(string) (int64, int64, error) { return 10 << 30, 20 << 30, nil }}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{left, linked} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want it removed", p, err)
		}
	}
}
