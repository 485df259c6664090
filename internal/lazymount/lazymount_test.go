//go:build linux

package lazymount_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/lazymount"
	"github.com/infera-dev/infera/internal/testutil"
)

// These tests mount a real FUSE file system: they need root and /dev/fuse, and fail without.

const (
	mib      = 1 << 20
	deadline = 10 * time.Second // for what should take milliseconds; failing, not pacing
)

func TestMain(m *testing.M) {
	if path := os.Getenv("LAZYMOUNT_TEST_MMAP_READER"); path != "" {
		os.Exit(mmapReader(path))
	}
	os.Exit(m.Run())
}

// mmapReader is the child process of TestMmapReaderInAnotherProcess: it maps path, as model
// servers map safetensors, and prints the SHA-256 of its bytes. (A goroutine of the test
// process itself must not fault on a withheld page: the Go runtime cannot stop a thread stuck
// in a page fault, so a garbage collection would wait for it.)
func mmapReader(path string) int {
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fi, err := f.Stat()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(fi.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	sum := sha256.Sum256(data)
	fmt.Println(hex.EncodeToString(sum[:]))
	return 0
}

// pattern returns n bytes that differ from page to page and from seed to seed.
func pattern(seed, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + seed*7 + i>>12)
	}
	return b
}

// harness is one mounted tree and the files a test opened on it.
type harness struct {
	m     *lazymount.Mount
	t     *testing.T
	mu    sync.Mutex
	files []*os.File
}

// mount mounts tree from b on a fresh directory. At the end of the test it closes the mount,
// then the files opened through the harness (closing a file waits for its reads, and a read
// waiting on the Backing ends only with the mount; were the order reversed, a failing test
// would hang, and a process that dies with reads pending on its own mount cannot exit), and
// checks that the directory is unmounted and that no goroutine outlives the mount.
func mount(t *testing.T, tree []lazymount.File, b lazymount.Backing, opts lazymount.Options) *harness {
	t.Helper()
	before := runtime.NumGoroutine()
	m, err := lazymount.New(t.TempDir(), tree, b, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h := &harness{m: m, t: t}
	t.Cleanup(func() {
		if err := m.Close(); err != nil && !errors.Is(err, lazymount.ErrBusy) {
			t.Errorf("Close: %v", err)
		}
		h.mu.Lock()
		for _, f := range h.files {
			f.Close()
		}
		h.mu.Unlock()
		if isMounted(t, m.Dir()) {
			t.Errorf("%s still mounted after Close", m.Dir())
		}
		if stacks, ok := testutil.GoroutinesSettle(deadline, before); !ok {
			t.Errorf("goroutines outlive the mount (had %d):\n%s", before, stacks)
		}
	})
	return h
}

// path returns the absolute path of rel in the mount.
func (h *harness) path(rel string) string { return filepath.Join(h.m.Dir(), rel) }

// open opens rel in the mount, to be closed after the mount.
func (h *harness) open(rel string) *os.File {
	h.t.Helper()
	f, err := os.Open(h.path(rel))
	if err != nil {
		h.t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.files = append(h.files, f)
	return f
}

func isMounted(t *testing.T, dir string) bool {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && fields[4] == dir {
			return true
		}
	}
	return false
}

// readResult is what a read in a goroutine came back with.
type readResult struct {
	b   []byte
	err error
}

// readAsync reads n bytes of f at off in a goroutine.
func readAsync(f *os.File, off int64, n int) <-chan readResult {
	ch := make(chan readResult, 1)
	go func() {
		b := make([]byte, n)
		k, err := f.ReadAt(b, off)
		ch <- readResult{b[:k], err}
	}()
	return ch
}

func waitFor[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(deadline):
		t.Fatalf("%s: not within %v", what, deadline)
		panic("unreachable")
	}
}

func equalBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d bytes, want %d", what, len(got), len(want))
	}
	i := 0
	for ; i < len(got); i++ {
		if got[i] != want[i] {
			break
		}
	}
	t.Fatalf("%s: byte %d is %#x, want %#x", what, i, got[i], want[i])
}

func TestStatShowsFinalSizesBeforeAnyData(t *testing.T) {
	modTime := time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)
	files := map[string][]byte{
		"config.json":                     pattern(1, 123),
		"weights/model-00001.safetensors": pattern(2, 5*mib+7),
		"weights/model-00002.safetensors": pattern(3, 3*mib),
		"weights/tok/vocab.txt":           nil,
	}
	tree := []lazymount.File{
		{Path: "config.json", Size: 123, ModTime: modTime},
		{Path: "weights/model-00001.safetensors", Size: 5*mib + 7},
		{Path: "weights/model-00002.safetensors", Size: 3 * mib, Mode: 0o440},
		{Path: "weights/tok/vocab.txt", Size: 0},
	}
	fb := newFakeBacking(mib, files) // nothing released: no byte is available
	h := mount(t, tree, fb, lazymount.DefaultOptions())

	for _, f := range tree {
		fi, err := os.Stat(h.path(f.Path))
		if err != nil {
			t.Fatal(err)
		}
		wantMode := iofs.FileMode(0o444)
		if f.Mode != 0 {
			wantMode = f.Mode
		}
		if fi.Size() != f.Size || fi.Mode() != wantMode || !fi.Mode().IsRegular() {
			t.Errorf("stat %s: size %d mode %v, want %d %v", f.Path, fi.Size(), fi.Mode(), f.Size, wantMode)
		}
		if !f.ModTime.IsZero() && !fi.ModTime().Equal(f.ModTime) {
			t.Errorf("stat %s: mtime %v, want %v", f.Path, fi.ModTime(), f.ModTime)
		}
	}
	for dir, want := range map[string][]string{
		".":           {"config.json", "weights"},
		"weights":     {"model-00001.safetensors", "model-00002.safetensors", "tok"},
		"weights/tok": {"vocab.txt"},
	} {
		entries, err := os.ReadDir(h.path(dir))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
			if e.IsDir() {
				fi, err := e.Info()
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode() != iofs.ModeDir|0o555 {
					t.Errorf("%s/%s: mode %v, want dr-xr-xr-x", dir, e.Name(), fi.Mode())
				}
			}
		}
		if !slices.Equal(names, want) {
			t.Errorf("readdir %s: %q, want %q", dir, names, want)
		}
	}
	out, err := exec.Command("ls", "-ln", h.path("weights")).CombinedOutput()
	if err != nil {
		t.Fatalf("ls -ln: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), " 5242887 ") || !strings.Contains(string(out), " 3145728 ") {
		t.Errorf("ls -ln does not show the final sizes:\n%s", out)
	}
	f := h.open("weights/model-00001.safetensors")
	if fi, err := f.Stat(); err != nil || fi.Size() != 5*mib+7 {
		t.Errorf("fstat: %v, %v", fi, err)
	}
	if n := fb.reads.Load(); n != 0 {
		t.Errorf("stat and readdir read data: %d Backing reads", n)
	}
	if _, err := os.Stat(h.path("missing")); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("stat missing: %v, want ENOENT", err)
	}
}

func TestReadAheadIsRaised(t *testing.T) {
	h := mount(t, []lazymount.File{{Path: "f", Size: 1}}, newFakeBacking(mib, nil), lazymount.DefaultOptions())
	var st syscall.Stat_t
	if err := syscall.Stat(h.m.Dir(), &st); err != nil {
		t.Fatal(err)
	}
	// st_dev as the kernel encodes it for user space: minor's low byte, major, minor's rest.
	major, minor := (st.Dev>>8)&0xfff, st.Dev&0xff|(st.Dev>>12)&^0xff
	kb, err := os.ReadFile(fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", major, minor))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(kb)); got != "1024" {
		t.Errorf("read_ahead_kb %s, want 1024 (DefaultOptions' 1 MiB)", got)
	}
}

func TestReadWaitsOnlyForItsOwnRange(t *testing.T) {
	data := pattern(4, 8*mib)
	fb := newFakeBacking(mib, map[string][]byte{"model": data})
	h := mount(t, []lazymount.File{{Path: "model", Size: int64(len(data))}}, fb, lazymount.DefaultOptions())
	f := h.open("model")
	for i := range int64(4) { // what readahead from the reads below can reach
		fb.release("model", i)
	}

	// A read of a withheld range blocks in the Backing...
	withheld := readAsync(f, 6*mib, 64<<10)
	waitFor(t, fb.waited("model", 6), "a read waiting on chunk 6")

	// ...while a read of an available range, on the same open file, returns.
	got := waitFor(t, readAsync(f, 0, 64<<10), "read of an available range while another is withheld")
	if got.err != nil {
		t.Fatal(got.err)
	}
	equalBytes(t, "read [0, 64K)", got.b, data[:64<<10])
	got = waitFor(t, readAsync(f, mib+4096, 200<<10), "second read of an available range")
	equalBytes(t, "read [1M+4K, +200K)", got.b, data[mib+4096:mib+4096+200<<10])
	select {
	case r := <-withheld:
		t.Fatalf("read of withheld chunk 6 returned before release: %d bytes, %v", len(r.b), r.err)
	default:
	}

	fb.release("model", 6)
	got = waitFor(t, withheld, "read of chunk 6 once released")
	if got.err != nil {
		t.Fatal(got.err)
	}
	equalBytes(t, "read [6M, +64K)", got.b, data[6*mib:6*mib+64<<10])
}

func TestConcurrentReadersOfAStreamingFile(t *testing.T) {
	for _, kernelCache := range []bool{false, true} {
		t.Run("kernel_cache="+map[bool]string{false: "off", true: "on"}[kernelCache], func(t *testing.T) {
			const chunks, threads = 12, 3
			model, other := pattern(5, chunks*mib), pattern(6, 4*mib+123)
			fb := newFakeBacking(mib, map[string][]byte{"model": model, "other": other})
			fb.releaseAll("other")
			opts := lazymount.DefaultOptions()
			opts.KernelCache = kernelCache
			h := mount(t, []lazymount.File{
				{Path: "model", Size: int64(len(model))},
				{Path: "other", Size: int64(len(other))},
			}, fb, opts)

			// Two replicas load "model" as it streams in, three threads each, each thread a
			// third of the file; a third replica reads "other", which is all there.
			var wg sync.WaitGroup
			errs := make(chan error, 2*threads+1)
			readRange := func(f *os.File, want []byte, off, end int64) {
				defer wg.Done()
				buf := make([]byte, 256<<10)
				for o := off; o < end; {
					n, err := f.ReadAt(buf[:min(int64(len(buf)), end-o)], o)
					if err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(buf[:n], want[o:o+int64(n)]) {
						errs <- errors.New("wrong bytes at " + f.Name())
						return
					}
					o += int64(n)
				}
			}
			for range 2 {
				f := h.open("model")
				share := int64(len(model)) / threads
				for k := range int64(threads) {
					wg.Add(1)
					go readRange(f, model, k*share, (k+1)*share)
				}
			}
			wg.Add(1)
			go readRange(h.open("other"), other, 0, int64(len(other)))

			// The fetch: each chunk arrives once somebody is waiting for it.
			for i := range int64(chunks) {
				waitFor(t, fb.waited("model", i), "a reader waiting on chunk")
				fb.release("model", i)
			}
			allDone := make(chan struct{})
			go func() { wg.Wait(); close(allDone) }()
			waitFor(t, allDone, "all readers")
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

func TestWithheldReadsDoNotStallOthers(t *testing.T) {
	// More readers waiting on missing ranges than the kernel's default of 12 background
	// requests: with that default every later buffered read on the mount would queue.
	const waiting = 40
	free := pattern(7, 8*mib)
	files := map[string][]byte{"free": free}
	tree := []lazymount.File{{Path: "free", Size: int64(len(free))}}
	for i := range waiting {
		name := "withheld/" + string(rune('A'+i/26)) + string(rune('a'+i%26))
		files[name] = pattern(i, mib)
		tree = append(tree, lazymount.File{Path: name, Size: mib})
	}
	fb := newFakeBacking(mib, files)
	fb.releaseAll("free")
	h := mount(t, tree, fb, lazymount.DefaultOptions())

	var blocked []<-chan readResult
	for _, f := range tree[1:] {
		blocked = append(blocked, readAsync(h.open(f.Path), 0, 4096))
	}
	for _, f := range tree[1:] {
		waitFor(t, fb.waited(f.Path, 0), "reader of "+f.Path+" waiting")
	}
	got, err := func() ([]byte, error) {
		ch := make(chan readResult, 1)
		go func() {
			b, err := os.ReadFile(h.path("free"))
			ch <- readResult{b, err}
		}()
		r := waitFor(t, ch, "reading an available file while 40 reads wait")
		return r.b, r.err
	}()
	if err != nil {
		t.Fatal(err)
	}
	equalBytes(t, "free", got, free)
	for i, f := range tree[1:] {
		fb.release(f.Path, 0)
		r := waitFor(t, blocked[i], "released read of "+f.Path)
		if r.err != nil {
			t.Fatal(r.err)
		}
		equalBytes(t, f.Path, r.b, files[f.Path][:4096])
	}
}

func TestReadsStopAtEOF(t *testing.T) {
	data := pattern(8, 100)
	fb := newFakeBacking(mib, map[string][]byte{"small": data, "empty": nil})
	fb.releaseAll("small")
	h := mount(t, []lazymount.File{{Path: "small", Size: 100}, {Path: "empty", Size: 0}}, fb, lazymount.DefaultOptions())
	f := h.open("small")

	buf := make([]byte, 200)
	n, err := f.ReadAt(buf, 50)
	if n != 50 || err != io.EOF {
		t.Errorf("ReadAt(200 bytes, 50): %d, %v; want 50, EOF", n, err)
	}
	equalBytes(t, "tail", buf[:n], data[50:])
	if n, err := f.ReadAt(buf, 100); n != 0 || err != io.EOF {
		t.Errorf("ReadAt at EOF: %d, %v; want 0, EOF", n, err)
	}
	if n, err := f.ReadAt(buf, 1<<40); n != 0 || err != io.EOF {
		t.Errorf("ReadAt far past EOF: %d, %v; want 0, EOF", n, err)
	}
	all, err := os.ReadFile(h.path("small"))
	if err != nil {
		t.Fatal(err)
	}
	equalBytes(t, "ReadFile", all, data)
	if all, err := os.ReadFile(h.path("empty")); err != nil || len(all) != 0 {
		t.Errorf("ReadFile(empty): %d bytes, %v", len(all), err)
	}
}

func TestBackingErrorIsEIOForThatRead(t *testing.T) {
	var logs bytes.Buffer
	var logMu sync.Mutex
	opts := lazymount.DefaultOptions()
	opts.Logger = slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))
	good := pattern(9, 4096)
	fb := newFakeBacking(mib, map[string][]byte{"bad": pattern(10, 4096), "good": good})
	fb.releaseAll("bad")
	fb.releaseAll("good")
	fb.failWith("bad", errors.New("object store: 503 slow down"))
	h := mount(t, []lazymount.File{{Path: "bad", Size: 4096}, {Path: "good", Size: 4096}}, fb, opts)

	_, err := os.ReadFile(h.path("bad"))
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("read of a failing range: %v, want EIO", err)
	}
	got, err := os.ReadFile(h.path("good"))
	if err != nil {
		t.Fatal(err)
	}
	equalBytes(t, "good", got, good)
	logMu.Lock()
	defer logMu.Unlock()
	if s := logs.String(); !strings.Contains(s, "path=bad") || !strings.Contains(s, "503 slow down") {
		t.Errorf("the failure is not logged; log:\n%s", s)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestKernelCacheKeepsPagesAcrossOpens(t *testing.T) {
	for _, tc := range []struct {
		kernelCache bool
		reread      bool // whether a second open reads through the Backing again
	}{
		{kernelCache: false, reread: true},
		{kernelCache: true, reread: false},
	} {
		t.Run(map[bool]string{false: "off", true: "on"}[tc.kernelCache], func(t *testing.T) {
			data := pattern(11, 2*mib)
			fb := newFakeBacking(mib, map[string][]byte{"f": data})
			fb.releaseAll("f")
			opts := lazymount.DefaultOptions()
			opts.KernelCache = tc.kernelCache
			h := mount(t, []lazymount.File{{Path: "f", Size: int64(len(data))}}, fb, opts)
			name := h.path("f")
			if got, err := os.ReadFile(name); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("first read: %v", err)
			}
			first := fb.reads.Load()
			if got, err := os.ReadFile(name); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("second read: %v", err)
			}
			if reread := fb.reads.Load() > first; reread != tc.reread {
				t.Errorf("second open read through the Backing: %v, want %v (reads %d then %d)", reread, tc.reread, first, fb.reads.Load())
			}
		})
	}
}

func TestWritesFailWithEROFS(t *testing.T) {
	fb := newFakeBacking(mib, map[string][]byte{"d/f": pattern(12, 10)})
	fb.releaseAll("d/f")
	h := mount(t, []lazymount.File{{Path: "d/f", Size: 10, Mode: 0o644}}, fb, lazymount.DefaultOptions())
	p := func(rel string) string { return h.path(rel) }
	for _, tc := range []struct {
		op string
		do func() error
	}{
		{"create", func() error { return os.WriteFile(p("new"), []byte("x"), 0o644) }},
		{"open for write", func() error {
			f, err := os.OpenFile(p("d/f"), os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"open for append", func() error {
			f, err := os.OpenFile(p("d/f"), os.O_RDWR|os.O_APPEND, 0)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"truncate", func() error { return os.Truncate(p("d/f"), 0) }},
		{"chmod", func() error { return os.Chmod(p("d/f"), 0o600) }},
		{"chown", func() error { return os.Chown(p("d/f"), 1, 1) }},
		{"utimes", func() error { return os.Chtimes(p("d/f"), time.Now(), time.Now()) }},
		{"unlink", func() error { return os.Remove(p("d/f")) }},
		{"rmdir", func() error { return syscall.Rmdir(p("d")) }},
		{"mkdir", func() error { return os.Mkdir(p("e"), 0o755) }},
		{"rename", func() error { return os.Rename(p("d/f"), p("d/g")) }},
		{"link", func() error { return os.Link(p("d/f"), p("d/g")) }},
		{"symlink", func() error { return os.Symlink("f", p("d/g")) }},
		{"mknod", func() error { return syscall.Mknod(p("d/fifo"), syscall.S_IFIFO|0o644, 0) }},
		{"setxattr", func() error { return syscall.Setxattr(p("d/f"), "user.x", []byte("1"), 0) }},
	} {
		if err := tc.do(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", tc.op, err)
		}
	}
	if got, err := os.ReadFile(p("d/f")); err != nil || !bytes.Equal(got, pattern(12, 10)) {
		t.Errorf("file changed or unreadable after the attempts: %q, %v", got, err)
	}
}

func TestCloseUnmounts(t *testing.T) {
	fb := newFakeBacking(mib, map[string][]byte{"f": pattern(13, 10)})
	before := runtime.NumGoroutine()
	m, err := lazymount.New(t.TempDir(), []lazymount.File{{Path: "f", Size: 10}}, fb, lazymount.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if !isMounted(t, m.Dir()) {
		t.Fatalf("%s not in mountinfo after New", m.Dir())
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if isMounted(t, m.Dir()) {
		t.Errorf("%s still mounted", m.Dir())
	}
	if entries, err := os.ReadDir(m.Dir()); err != nil || len(entries) != 0 {
		t.Errorf("mount point after Close: %v, %v; want empty", entries, err)
	}
	if stacks, ok := testutil.GoroutinesSettle(deadline, before); !ok {
		t.Errorf("goroutines outlive the mount:\n%s", stacks)
	}
}

func TestCloseWithABlockedReader(t *testing.T) {
	data := pattern(14, 4*mib)
	fb := newFakeBacking(mib, map[string][]byte{"model": data, "idle": pattern(15, 10)})
	fb.releaseAll("idle")
	h := mount(t, []lazymount.File{
		{Path: "model", Size: int64(len(data))},
		{Path: "idle", Size: 10},
	}, fb, lazymount.DefaultOptions())
	// An open file that nobody reads keeps the mount busy across Close, as a replica would.
	idle := h.open("idle")
	blocked := readAsync(h.open("model"), 2*mib, 64<<10)
	waitFor(t, fb.waited("model", 2), "a read waiting on chunk 2")

	closed := make(chan error, 1)
	go func() { closed <- h.m.Close() }()
	err := waitFor(t, closed, "Close with a blocked reader and an open file")
	if !errors.Is(err, lazymount.ErrBusy) {
		t.Errorf("Close: %v, want ErrBusy", err)
	}
	r := waitFor(t, blocked, "the blocked read once closed")
	if r.err == nil {
		t.Errorf("blocked read: %d bytes and no error after Close", len(r.b))
	}
	if fb.canceled.Load() == 0 {
		t.Error("the Backing's read was not canceled")
	}
	if isMounted(t, h.m.Dir()) {
		t.Errorf("%s still mounted", h.m.Dir())
	}
	if entries, err := os.ReadDir(h.m.Dir()); err != nil || len(entries) != 0 {
		t.Errorf("mount point after Close: %v, %v; want empty", entries, err)
	}
	if _, err := idle.ReadAt(make([]byte, 10), 0); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("read of a file left open: %v, want ENOTCONN", err)
	}
	if err2 := h.m.Close(); err2 != err {
		t.Errorf("second Close: %v, want the first one's %v", err2, err)
	}
}

func TestMmapReaderInAnotherProcess(t *testing.T) {
	const chunks = 6
	data := pattern(17, chunks*mib)
	fb := newFakeBacking(mib, map[string][]byte{"model.safetensors": data})
	h := mount(t, []lazymount.File{{Path: "model.safetensors", Size: int64(len(data))}}, fb, lazymount.DefaultOptions())
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "LAZYMOUNT_TEST_MMAP_READER="+h.path("model.safetensors"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { // should the test fail early, the child must not outlive it
		cmd.Process.Kill()
		<-exited
	}()
	for i := range int64(chunks) {
		waitFor(t, fb.waited("model.safetensors", i), "the mapping's reader waiting on chunk")
		fb.release("model.safetensors", i)
	}
	if err := waitFor(t, exited, "the mmap reader"); err != nil {
		t.Fatalf("mmap reader: %v\n%s", err, out.String())
	}
	exited <- nil // for the deferred wait
	want := sha256.Sum256(data)
	if got := strings.TrimSpace(out.String()); got != hex.EncodeToString(want[:]) {
		t.Errorf("mmap reader saw sha256 %s, want %x", got, want)
	}
}

func TestKilledReaderDoesNotHang(t *testing.T) {
	// A replica killed while it loads a range not yet fetched must die at once.
	fb := newFakeBacking(mib, map[string][]byte{"model": pattern(16, 2*mib)})
	h := mount(t, []lazymount.File{{Path: "model", Size: 2 * mib}}, fb, lazymount.DefaultOptions())
	cmd := exec.Command("dd", "if="+h.path("model"), "of=/dev/null", "bs=64k", "count=1")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, fb.waited("model", 0), "dd waiting on chunk 0")
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	waitFor(t, exited, "killed dd to exit")
}

func TestNewRejectsBadTrees(t *testing.T) {
	for _, tc := range []struct {
		name string
		tree []lazymount.File
		want []string // in the error, in order
	}{
		{"absolute", []lazymount.File{{Path: "/etc/passwd"}}, []string{`tree[0] "/etc/passwd": absolute path`}},
		{"dot-dot", []lazymount.File{{Path: "../x"}, {Path: ".."}}, []string{`tree[0] "../x": not a clean`, `tree[1] "..": not a clean`}},
		{"unclean", []lazymount.File{{Path: "a//b"}, {Path: "a/./b"}, {Path: "a/"}}, []string{`tree[0]`, `tree[1]`, `tree[2]`}},
		{"empty", []lazymount.File{{Path: ""}, {Path: "."}}, []string{`tree[0] "": empty path`, `tree[1] ".": empty path`}},
		{"duplicate", []lazymount.File{{Path: "a"}, {Path: "a"}}, []string{`tree[1] "a": listed again (first at tree[0])`}},
		{"file is a dir", []lazymount.File{{Path: "a/b"}, {Path: "a"}}, []string{`tree[1] "a": is a file and also the directory of tree[0] "a/b"`}},
		{"negative size", []lazymount.File{{Path: "a", Size: -1}}, []string{`tree[0] "a": negative size -1`}},
		{"not permission bits", []lazymount.File{{Path: "a", Mode: iofs.ModeDir | 0o755}, {Path: "b", Mode: iofs.ModeSetuid | 0o755}}, []string{`tree[0] "a": mode`, `tree[1] "b": mode`}},
		{"long name", []lazymount.File{{Path: "d/" + strings.Repeat("x", 256)}}, []string{`longer than 255 bytes`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := lazymount.New(t.TempDir(), tc.tree, newFakeBacking(mib, nil), lazymount.DefaultOptions())
			if !errors.Is(err, lazymount.ErrBadTree) {
				t.Fatalf("New: %v, want ErrBadTree", err)
			}
			msg := err.Error()
			for _, w := range tc.want {
				i := strings.Index(msg, w)
				if i < 0 {
					t.Fatalf("error %q lacks %q", err, w)
				}
				msg = msg[i+len(w):]
			}
		})
	}
	if _, err := lazymount.New(filepath.Join(t.TempDir(), "missing"), nil, newFakeBacking(mib, nil), lazymount.DefaultOptions()); !errors.Is(err, iofs.ErrNotExist) {
		t.Errorf("New on a missing dir: %v, want ErrNotExist", err)
	}
}

// TestDetachKeepsServingOpenFiles: Detach empties the directory at once while a file opened
// before goes on reading, waits included; Close then ends it (ENOTCONN) and its goroutines.
func TestDetachKeepsServingOpenFiles(t *testing.T) {
	data := pattern(21, 3*mib)
	fb := newFakeBacking(mib, map[string][]byte{"model": data})
	fb.release("model", 0)
	before := runtime.NumGoroutine()
	m, err := lazymount.New(t.TempDir(), []lazymount.File{{Path: "model", Size: int64(len(data))}}, fb, lazymount.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(m.Dir(), "model"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := m.Detach(); err != nil {
		t.Fatalf("Detach: %v", err)
	}
	if err := m.Detach(); err != nil {
		t.Fatalf("second Detach: %v", err)
	}
	if isMounted(t, m.Dir()) {
		t.Errorf("%s still mounted after Detach", m.Dir())
	}
	if entries, err := os.ReadDir(m.Dir()); err != nil || len(entries) != 0 {
		t.Errorf("directory after Detach: %v, %v; want empty", entries, err)
	}
	got := make([]byte, 4096)
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, data[:4096]) {
		t.Fatalf("read after Detach: %v", err)
	}
	pending := readAsync(f, 2*mib, 4096)
	waitFor(t, fb.waited("model", 2), "a read waiting on chunk 2 after Detach")
	fb.release("model", 2)
	if r := waitFor(t, pending, "the waiting read"); r.err != nil || !bytes.Equal(r.b, data[2*mib:2*mib+4096]) {
		t.Fatalf("waiting read after Detach: %v", r.err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("Close after Detach: %v", err)
	}
	if _, err := f.ReadAt(got, mib); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("read after Close: %v, want ENOTCONN", err)
	}
	f.Close()
	if stacks, ok := testutil.GoroutinesSettle(deadline, before); !ok {
		t.Errorf("goroutines outlive the mount:\n%s", stacks)
	}
}
