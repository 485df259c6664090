package modelcache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/infera-dev/infera/internal/lazymount"
)

// Lazy datasets: a replica may mount a dataset while it is being fetched, as Fluid's FUSE
// serves a dataset before it is cached. LazyPath mounts the dataset's tree (final sizes, from
// the listing) through package lazymount at Root/.lazy/NAMESPACE/NAME, one mount per dataset
// shared by every replica. A read is served
//
//   - from a complete file in the cache directory, when that file is fetched;
//   - from memory for a safetensors file's header, which the fetch reads first of all;
//   - else from the file's partial file, once the fetch has written the range: the read asks
//     the file's Transfer for it first (Transfer.Wait), starting the file's transfer at once,
//     beyond FetchConcurrency, when the background fetch has not reached it yet.
//
// The background fetch goes in file order (after the files DataLoads want first), every
// safetensors header before any file. Once the dataset is Ready the mount is detached from its
// directory, which becomes a symbolic link to the cache directory: a replica started on the
// lazy path from then on gets a plain bind mount of the cache, while those started before keep
// reading through the mount (their open files, and a bubblewrap sandbox's copy of it). Once no
// replica holds the dataset the mount is closed. LazyPath itself returns the cache directory
// (Path) for a Ready dataset. Mounts are closed when their dataset is removed and when Run
// returns.
//
//	LazyPath (Fetching, listed) ──mount──▶ live ──Ready──▶ detached: dir → cache dir
//	                                        │                 │ no holder
//	                                        │                 ▼
//	                                        └──removed, or Run ends──▶ closed (dir removed)

// transferStarter is a fetcher that can hand out its transfers: the package's Fetcher. Only
// with one can a dataset be read while it is fetched.
type transferStarter interface {
	StartFetch(ctx context.Context, src Source, obj Object, dst string, progress func(delta int64)) *Transfer
}

// maxHeader bounds the safetensors header the fetch keeps in memory (the format's own limit is
// 100 MB; real headers are well under 1 MiB).
const maxHeader = 16 << 20

var errRunOver = errors.New("fetch run over")

// fetchRun is one worker's fetch of a dataset's files, as the lazy mount sees it.
type fetchRun struct {
	ctx    context.Context
	dir    string // the cache directory
	files  []indexedFile
	byPath map[string]int
	start  func(i int) *Transfer

	mu        sync.Mutex
	transfers map[int]*Transfer
	done      []bool
	headers   map[int][]byte
	closed    bool
}

func newFetchRun(ctx context.Context, dir string, files []indexedFile, start func(i int) *Transfer) *fetchRun {
	r := &fetchRun{
		ctx: ctx, dir: dir, files: files, byPath: make(map[string]int, len(files)), start: start,
		transfers: map[int]*Transfer{}, done: make([]bool, len(files)), headers: map[int][]byte{},
	}
	for i, f := range files {
		r.byPath[f.Path] = i
		r.done[i] = f.Done
	}
	return r
}

// transfer returns file i's transfer, starting it when nothing has yet.
func (r *fetchRun) transfer(i int) (*Transfer, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t := r.transfers[i]; t != nil {
		return t, nil
	}
	if r.closed {
		return nil, errRunOver
	}
	t := r.start(i)
	r.transfers[i] = t
	return t, nil
}

func (r *fetchRun) markDone(i int) {
	r.mu.Lock()
	r.done[i] = true
	r.mu.Unlock()
}

// close refuses new transfers and waits for those started to end.
func (r *fetchRun) close() {
	r.mu.Lock()
	r.closed = true
	ts := make([]*Transfer, 0, len(r.transfers))
	for _, t := range r.transfers {
		ts = append(ts, t)
	}
	r.mu.Unlock()
	for _, t := range ts {
		<-t.Done()
	}
}

// readAt serves a lazy read from this run; errRunOver means: ask the next run.
func (r *fetchRun) readAt(ctx context.Context, i int, p []byte, off int64) (int, error) {
	r.mu.Lock()
	h, done := r.headers[i], r.done[i]
	r.mu.Unlock()
	dst := filepath.Join(r.dir, filepath.FromSlash(r.files[i].Path))
	k := 0
	if !done && off < int64(len(h)) {
		k = copy(p, h[off:])
		if k == len(p) {
			return k, nil
		}
	}
	rest, roff := p[k:], off+int64(k)
	if done {
		n, err := readFileAt(dst, rest, roff)
		return k + n, err
	}
	t, err := r.transfer(i)
	if err != nil {
		return k, err
	}
	if err := t.Wait(ctx, roff, int64(len(rest))); err != nil {
		return k, err
	}
	n, err := readFileAt(t.Partial(), rest, roff)
	if errors.Is(err, os.ErrNotExist) {
		n, err = readFileAt(dst, rest, roff) // renamed since: complete
	}
	return k + n, err
}

// fetchHeaders reads the header of each pending safetensors file into memory, in file order,
// a few at once. A header it cannot read is left to the file's transfer.
func (r *fetchRun) fetchHeaders(ctx context.Context, todo []int, srcs []Source, limit int) {
	var g errgroup.Group
	g.SetLimit(limit)
	for _, i := range todo {
		f := r.files[i]
		if !strings.HasSuffix(f.Path, ".safetensors") || f.Object.Size < 8 {
			continue
		}
		g.Go(func() error {
			h, err := readHeader(ctx, srcs[f.Mount], f.Object)
			if err == nil {
				r.mu.Lock()
				r.headers[i] = h
				r.mu.Unlock()
			}
			return nil
		})
	}
	_ = g.Wait()
}

// readHeader reads a safetensors file's header: its 8-byte little-endian length, then the
// JSON, returned together as the file's first bytes.
func readHeader(ctx context.Context, src Source, obj Object) ([]byte, error) {
	var lenBuf [8]byte
	if err := readRangeFull(ctx, src, obj.Key, 0, lenBuf[:]); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n == 0 || n > maxHeader || int64(n) > obj.Size-8 {
		return nil, fmt.Errorf("safetensors header of %d bytes", n)
	}
	h := make([]byte, 8+n)
	copy(h, lenBuf[:])
	if err := readRangeFull(ctx, src, obj.Key, 8, h[8:]); err != nil {
		return nil, err
	}
	return h, nil
}

func readRangeFull(ctx context.Context, src Source, key string, off int64, p []byte) error {
	rc, err := src.ReadRange(ctx, key, off, int64(len(p)))
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.ReadFull(rc, p)
	return err
}

func readFileAt(name string, p []byte, off int64) (int, error) {
	f, err := os.Open(name)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.ReadAt(p, off)
}

// lazyFS is a dataset's live lazy mount; its Backing reads through the dataset's current run.
type lazyFS struct {
	m     *Manager
	d     *dsState
	dir   string // the mount point, Root/.lazy/ns/name
	plain string // the cache directory
	index map[string]int
	mount *lazymount.Mount
	// Guarded by Manager.mu: detach is set once the dataset is Ready (flush detaches it and
	// links its directory to the cache directory), remove when it is gone or Run ended (the
	// directory is removed, not linked).
	detach, remove bool
}

// mountOp is a lazy mount's change, decided under Manager.mu and carried out by flush.
type mountOp struct {
	l     *lazyFS
	close bool // close it; otherwise detach it
}

// ReadAt is the mount's Backing: it waits for the range in the dataset's current run, or for
// the next run while none is running (a retry after a failure), or reads the cache directory
// once the dataset is Ready.
func (l *lazyFS) ReadAt(ctx context.Context, path string, p []byte, off int64) (int, error) {
	i, ok := l.index[path]
	if !ok {
		return 0, fmt.Errorf("modelcache: lazy read of %s: %w", path, os.ErrNotExist)
	}
	for {
		l.m.mu.Lock()
		run, ch, ready := l.d.run, l.d.runCh, l.d.phase == PhaseReady
		l.m.mu.Unlock()
		switch {
		case run != nil && i < len(run.files) && run.files[i].Path == path:
			n, err := run.readAt(ctx, i, p, off)
			if !errors.Is(err, errRunOver) {
				return n, err
			}
			continue
		case ready && run == nil:
			return readFileAt(filepath.Join(l.plain, filepath.FromSlash(path)), p, off)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// setRunLocked makes run the dataset's current run (nil: none) and wakes the lazy readers.
func (d *dsState) setRunLocked(run *fetchRun) {
	d.run = run
	if d.runCh != nil {
		close(d.runCh)
	}
	d.runCh = make(chan struct{})
}

// Lazy reports whether LazyPath can mount datasets being fetched: the Fetcher hands out its
// transfers, and /dev/fuse and a test mount worked when the Manager was made.
func (m *Manager) Lazy() bool { return m.lazy }

// probeLazy tries a mount of an empty tree under Root/.lazy.
func (m *Manager) probeLazy() error {
	dir := filepath.Join(m.cfg.Root, ".lazy", ".probe")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	defer os.Remove(dir)
	mt, err := lazymount.New(dir, nil, nil, lazymount.Options{})
	if err != nil {
		return err
	}
	return mt.Close()
}

// LazyPath returns the directory to mount read-only for a dataset a replica may read while it
// is fetched: Path's directory once Ready; while it is Fetching and listed, the directory of
// the dataset's lazy mount (made on the first call; see the top of lazy.go). Without lazy
// mounts (Lazy is false), for a dataset served in place, or one with local mounts among
// remote ones, it is Path. Before the listing it returns Path's ErrNotReady. Pin the dataset
// before starting a replica on the path, as with Path.
func (m *Manager) LazyPath(namespace, name string) (string, error) {
	p, err := m.Path(namespace, name)
	if err == nil || !m.lazy || !errors.Is(err, ErrNotReady) {
		return p, err
	}
	m.lazyMu.Lock()
	p, err = m.mountLazy(namespace, name, err)
	m.lazyMu.Unlock()
	m.flush()
	return p, err
}

// mountLazy is LazyPath for a dataset not Ready, whose error is notReady; m.lazyMu is held.
func (m *Manager) mountLazy(namespace, name string, notReady error) (string, error) {
	err := notReady
	m.mu.Lock()
	old := m.unmounts
	m.unmounts = nil
	d := m.datasets[namespace+"/"+name]
	var run *fetchRun
	var live *lazyFS
	var rt *RuntimeSpec
	links, detached := false, false
	if d != nil {
		run, live, rt, links = d.run, d.lazyFS, d.spec.Runtime, d.links
		detached = live != nil && live.detach
	}
	m.mu.Unlock()
	m.closeMounts(old)
	switch {
	case live != nil && !detached:
		return live.dir, nil
	case live != nil || run == nil || links:
		// A detached mount's directory leads to the cache directory: fetched again, it would
		// show partial files. The dataset waits until its holders let the old mount go.
		return "", err
	}
	l := &lazyFS{m: m, d: d, dir: filepath.Join(m.cfg.Root, ".lazy", namespace, name), plain: run.dir, index: run.byPath}
	tree := make([]lazymount.File, len(run.files))
	for i, f := range run.files {
		tree[i] = lazymount.File{Path: f.Path, Size: f.Object.Size, ModTime: f.Object.ModTime}
	}
	opts := lazymount.DefaultOptions()
	if rt != nil {
		var ignored []string
		opts, ignored = lazymount.ParseFuseArgs(rt.FuseArgs)
		if len(ignored) > 0 {
			m.log.Debug("fuse args ignored by the lazy mount", "dataset", d.key, "args", ignored)
		}
	}
	opts.Name = "infera-" + namespace + "-" + name
	opts.Logger = m.log
	_ = os.Remove(l.dir) // a link or empty directory a previous mount left
	if err := os.MkdirAll(l.dir, 0o755); err != nil {
		return "", fmt.Errorf("modelcache: lazy mount of %s: %w", d.key, err)
	}
	mt, merr := lazymount.New(l.dir, tree, l, opts)
	if merr != nil {
		m.log.Warn("lazy mount failed: the dataset is served once cached", "dataset", d.key, "error", merr)
		return "", err
	}
	l.mount = mt
	m.mu.Lock()
	if m.datasets[d.key] != d || d.run != run || m.stopped {
		m.mu.Unlock()
		l.remove = true
		m.closeMounts([]mountOp{{l: l, close: true}})
		return "", err
	}
	d.lazyFS = l
	m.changed = append(m.changed, d.key)
	m.mu.Unlock()
	m.log.Debug("dataset mounted lazily", "dataset", d.key, "dir", l.dir)
	return l.dir, nil
}

// maybeUnmountLocked detaches the dataset's lazy mount once it is Ready, and closes it once no
// replica holds it too, or when remove (the dataset is gone): flush does it.
func (m *Manager) maybeUnmountLocked(d *dsState, remove bool) {
	l := d.lazyFS
	if l == nil || !remove && d.phase != PhaseReady {
		return
	}
	if remove || len(m.pins[d.key]) == 0 {
		d.lazyFS = nil
		l.remove = remove
		m.unmounts = append(m.unmounts, mountOp{l: l, close: true})
		m.changed = append(m.changed, d.key)
		return
	}
	if !l.detach {
		l.detach = true
		m.unmounts = append(m.unmounts, mountOp{l: l})
	}
}

// closeMounts detaches or closes lazy mounts. A mount point detached becomes a link to the
// cache directory; one closed is removed when its dataset is gone. m.lazyMu is held.
func (m *Manager) closeMounts(ops []mountOp) {
	for _, op := range ops {
		l := op.l
		if !op.close {
			if err := l.mount.Detach(); err != nil {
				m.log.Warn("lazy mount not detached: new replicas go on reading through it", "dir", l.dir, "error", err)
				continue
			}
			m.linkToCache(l)
			continue
		}
		if err := l.mount.Close(); err != nil {
			m.log.Warn("lazy mount closed with files open", "dir", l.dir, "error", err)
		}
		if l.remove {
			if err := os.Remove(l.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
				m.log.Warn("lazy mount point not removed", "dir", l.dir, "error", err)
			}
			continue
		}
		if fi, err := os.Lstat(l.dir); err == nil && fi.Mode()&os.ModeSymlink == 0 {
			m.linkToCache(l)
		}
	}
}

// linkToCache replaces the emptied mount point of l by a link to the cache directory.
func (m *Manager) linkToCache(l *lazyFS) {
	if err := os.Remove(l.dir); err != nil {
		m.log.Warn("lazy mount point not removed", "dir", l.dir, "error", err)
		return
	}
	if err := os.Symlink(l.plain, l.dir); err != nil {
		m.log.Warn("lazy mount point not linked to the cache", "dir", l.dir, "error", err)
	}
}

// flushMounts closes the mounts gathered under mu.
func (m *Manager) flushMounts() {
	m.mu.Lock()
	empty := len(m.unmounts) == 0
	m.mu.Unlock()
	if empty {
		return
	}
	m.lazyMu.Lock()
	defer m.lazyMu.Unlock()
	m.mu.Lock()
	ls := m.unmounts
	m.unmounts = nil
	m.mu.Unlock()
	m.closeMounts(ls)
}

// stopMounts closes every lazy mount; Run calls it once its workers have exited.
func (m *Manager) stopMounts() {
	m.mu.Lock()
	m.stopped = true
	for _, d := range m.datasets {
		m.maybeUnmountLocked(d, true)
	}
	for _, d := range m.gone {
		m.maybeUnmountLocked(d, true)
	}
	m.mu.Unlock()
	m.flushMounts()
}

// fetchFilesLazily fetches the files todo of the entry e as fetch does with a plain
// ObjectFetcher, but through transfers a lazy mount can read while they run.
func (m *Manager) fetchFilesLazily(ctx context.Context, ts transferStarter, d *dsState, j job, e *indexEntry, srcs []Source, todo []int, links bool) error {
	g, gctx := errgroup.WithContext(ctx)
	got := make([]int64, len(e.Files))
	var gotMu sync.Mutex
	run := newFetchRun(gctx, e.Dir, e.Files, func(i int) *Transfer {
		f := e.Files[i]
		dst := filepath.Join(e.Dir, filepath.FromSlash(f.Path))
		_ = os.MkdirAll(filepath.Dir(dst), 0o755) // a failure shows in the transfer
		return ts.StartFetch(gctx, srcs[f.Mount], f.Object, dst, func(delta int64) {
			gotMu.Lock()
			got[i] += delta
			gotMu.Unlock()
			m.progress(d, j.gen, delta)
		})
	})
	m.mu.Lock()
	if d.gen != j.gen {
		m.mu.Unlock()
		return context.Canceled
	}
	d.setRunLocked(run)
	d.links = links
	m.changed = append(m.changed, d.key) // LazyPath can mount it now
	m.mu.Unlock()
	m.flush()
	defer func() {
		run.close()
		m.mu.Lock()
		if d.run == run {
			d.setRunLocked(nil)
		}
		m.mu.Unlock()
	}()
	if m.lazy {
		run.fetchHeaders(gctx, todo, srcs, m.cfg.FetchConcurrency)
	}
	g.SetLimit(m.cfg.FetchConcurrency)
	for _, i := range todo {
		f := e.Files[i]
		g.Go(func() error {
			if gctx.Err() != nil {
				return gctx.Err()
			}
			t, err := run.transfer(i)
			if err != nil {
				return err
			}
			<-t.Done()
			if err := t.Err(); err != nil {
				return sourceError(srcs[f.Mount], err)
			}
			gotMu.Lock()
			adjust := f.Object.Size - got[i]
			gotMu.Unlock()
			m.fileDone(d, j.gen, e, i, adjust)
			run.markDone(i)
			return nil
		})
	}
	return g.Wait()
}
