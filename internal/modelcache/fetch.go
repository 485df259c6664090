package modelcache

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/crc64nvme"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// Defaults of a Fetcher's fields. 16 MiB ranges over 16 streams keep a link with a per-
// connection limit full and cost one journal write per 16 MiB; see fetch_bench_test.go.
const (
	DefaultChunkSize    = 16 << 20
	DefaultStreams      = 16
	DefaultRetries      = 10
	DefaultStallTimeout = 10 * time.Second
)

// Fetcher downloads objects from a Source into files: parallel ranged reads into a
// preallocated dst + ".partial", each range retried on its own, a journal (dst + ".journal")
// that lets a later Fetch resume after a crash, and verification against the object's
// checksum before the file is renamed to dst. dst never exists incomplete or unverified.
//
// The zero Fetcher uses the defaults. One Fetcher serves any number of fetches at once, but
// one dst must have one fetch at a time.
type Fetcher struct {
	// ChunkSize is the size of each ranged read and of each journal record (default 16 MiB).
	ChunkSize int64
	// Streams is how many ranges are read at once (default 16).
	Streams int
	// Retries is how many times a range is tried again after a failure (default 10, < 0: never).
	// A range that made progress before failing starts its count again.
	Retries int
	// StallTimeout gives up on a range's request when no byte arrived for that long and tries
	// the range again (default 10 s).
	StallTimeout time.Duration
	// Backoff is the wait before the attempt-th retry, from 1 (default DefaultBackoff).
	Backoff func(attempt int) time.Duration
	// Logger gets retries (Debug) and restarts of changed objects (Info); nil: none.
	Logger *slog.Logger
	// NoVerify skips checksum verification, keeping the size check. It exists for the
	// benchmark that measures what verification costs; nothing else should set it.
	NoVerify bool
}

// DefaultBackoff waits 100 ms before the first retry, doubling up to 10 s.
func DefaultBackoff(attempt int) time.Duration {
	d := 100 * time.Millisecond
	for i := 1; i < attempt && d < 10*time.Second; i++ {
		d *= 2
	}
	return min(d, 10*time.Second)
}

func (f Fetcher) withDefaults() Fetcher {
	if f.ChunkSize <= 0 {
		f.ChunkSize = DefaultChunkSize
	}
	if f.Streams <= 0 {
		f.Streams = DefaultStreams
	}
	switch {
	case f.Retries == 0:
		f.Retries = DefaultRetries
	case f.Retries < 0:
		f.Retries = 0
	}
	if f.StallTimeout <= 0 {
		f.StallTimeout = DefaultStallTimeout
	}
	if f.Backoff == nil {
		f.Backoff = DefaultBackoff
	}
	if f.Logger == nil {
		f.Logger = slog.New(slog.DiscardHandler)
	}
	return f
}

// Fetch downloads obj.Key from src to dst, calling progress (if not nil) with each number of
// bytes written, from several goroutines at once. It resumes a fetch of the same object (size
// and ETag) that an earlier Fetch left unfinished. On an error the partial file and journal
// stay for the next Fetch to resume, except after ErrCorrupt and ErrChanged, which remove them.
func (f *Fetcher) Fetch(ctx context.Context, src Source, obj Object, dst string, progress func(delta int64)) error {
	t := f.StartFetch(ctx, src, obj, dst, progress)
	<-t.Done()
	return t.Err()
}

// StartFetch starts Fetch in the background and returns its handle. The transfer stops when
// ctx is cancelled; its goroutines have exited once Done is closed.
func (f *Fetcher) StartFetch(ctx context.Context, src Source, obj Object, dst string, progress func(delta int64)) *Transfer {
	if progress == nil {
		progress = func(int64) {}
	}
	t := &Transfer{
		cfg: f.withDefaults(), src: src, hint: obj, dst: dst, progress: progress,
		done: make(chan struct{}), changed: make(chan struct{}),
	}
	go t.run(ctx)
	return t
}

// Transfer is one fetch in progress. Its methods may be called from any goroutine.
type Transfer struct {
	cfg      Fetcher
	src      Source
	hint     Object // what the caller passed: its Key, and checksums the Stat may lack
	dst      string
	progress func(int64)
	done     chan struct{}

	mu      sync.Mutex
	err     error
	obj     Object        // what is being fetched, from Stat
	chunk   int64         // chunk size of the current round
	state   []chunkState  // nil until a round starts
	filled  []int64       // bytes written from each chunk's start, in order: a Wait needs no more
	cursor  int           // chunks below it are taken or done, unless urgent brought them forward
	urgent  []int         // chunks asked for by Want, most recent first
	wants   []byteRange   // asked for before a round started
	prefix  int           // chunks [0, prefix) are done
	changed chan struct{} // closed and replaced when a chunk is done or a round starts
	served  bool          // Wait returned nil: a reader may have read the partial file
	resumed int64
}

type chunkState uint8

const (
	chunkMissing chunkState = iota
	chunkInFlight
	chunkDone
)

type byteRange struct{ off, n int64 }

// Done is closed when the transfer has ended, with Err telling how.
func (t *Transfer) Done() <-chan struct{} { return t.done }

// Err is nil until Done is closed, then nil when dst is in place, or why it is not.
func (t *Transfer) Err() error {
	select {
	case <-t.done:
	default:
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// Object is the object being fetched, as the Stat at the start found it (its Size and ETag may
// differ from those StartFetch was given when it changed upstream since); zero until then.
func (t *Transfer) Object() Object {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.obj
}

// Resumed is how many bytes an earlier fetch had already written when this one started.
func (t *Transfer) Resumed() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.resumed
}

// Partial is the file being written, dst + ".partial".
func (t *Transfer) Partial() string { return t.dst + ".partial" }

// Want moves the chunks holding bytes [off, off+n) to the front of the queue, the latest
// Want first: a reader waiting for them (a lazy read of the partial file) goes before the
// rest of the download.
func (t *Transfer) Want(off, n int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state == nil {
		t.wants = append(t.wants, byteRange{off, n})
		return
	}
	t.want(off, n)
}

// want does Want with t.mu held and a round started.
func (t *Transfer) want(off, n int64) {
	first, last, ok := t.chunks(off, n)
	if !ok {
		return
	}
	var add []int
	for i := first; i <= last; i++ {
		if t.state[i] == chunkMissing {
			add = append(add, i)
		}
	}
	t.urgent = append(add, t.urgent...)
}

// chunks returns the chunks holding bytes [off, off+n) of the object, clipped to its size.
func (t *Transfer) chunks(off, n int64) (first, last int, ok bool) {
	off = max(off, 0)
	end := min(off+n, t.obj.Size)
	if n <= 0 || off >= end {
		return 0, 0, false
	}
	return int(off / t.chunk), int((end - 1) / t.chunk), true
}

// Wait does Want(off, n) and returns once bytes [off, off+n) are written to the partial file
// (not yet verified: that happens when the whole file is in), or the transfer has ended (its
// Err; nil when dst is complete), or ctx is done. A range need not wait for the rest of its
// chunk: a chunk is written from its start, and Wait returns once it has got past the range.
func (t *Transfer) Wait(ctx context.Context, off, n int64) error {
	t.Want(off, n)
	for {
		t.mu.Lock()
		ok := t.state != nil && t.written(off, n)
		ch := t.changed
		if ok {
			t.served = true
		}
		t.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-t.done:
			return t.Err()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (t *Transfer) written(off, n int64) bool {
	first, last, ok := t.chunks(off, n)
	end := min(off+n, t.obj.Size)
	for i := first; ok && i <= last; i++ {
		if t.state[i] == chunkDone {
			continue
		}
		start := int64(i) * t.chunk
		if t.filled[i] < min(end, start+t.chunk)-start {
			return false
		}
	}
	return true
}

// fill records that chunk i is written from its start up to the object's byte end, and wakes
// the Waits.
func (t *Transfer) fill(i int, end int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f := end - int64(i)*t.chunk; f > t.filled[i] {
		t.filled[i] = f
		t.broadcast()
	}
}

// take returns the next chunk to fetch and marks it in flight: asked-for chunks first, then in
// order.
func (t *Transfer) take() (int, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.urgent) > 0 {
		i := t.urgent[0]
		t.urgent = t.urgent[1:]
		if t.state[i] == chunkMissing {
			t.state[i] = chunkInFlight
			return i, true
		}
	}
	for ; t.cursor < len(t.state); t.cursor++ {
		if t.state[t.cursor] == chunkMissing {
			t.state[t.cursor] = chunkInFlight
			return t.cursor, true
		}
	}
	return 0, false
}

func (t *Transfer) markDone(i int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.state[i] = chunkDone
	for t.prefix < len(t.state) && t.state[t.prefix] == chunkDone {
		t.prefix++
	}
	t.broadcast()
}

// broadcast wakes everyone waiting on t.changed; t.mu is held.
func (t *Transfer) broadcast() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// doneBytes is where the contiguous written prefix ends, with the channel that is closed when
// it may have grown.
func (t *Transfer) doneBytes() (int64, <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return min(int64(t.prefix)*t.chunk, t.obj.Size), t.changed
}

func (t *Transfer) run(ctx context.Context) {
	err := t.fetch(ctx)
	t.mu.Lock()
	t.err = err
	t.mu.Unlock()
	close(t.done)
}

// fetch stats the object and fetches it; an object that changes while it is fetched is fetched
// again once (unless a reader already read from the partial file), then fails with ErrChanged.
func (t *Transfer) fetch(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		obj, err := t.stat(ctx)
		if err != nil {
			return err
		}
		err = t.round(ctx, obj)
		if err == nil {
			return nil
		}
		if errors.Is(err, ErrChanged) || errors.Is(err, ErrCorrupt) {
			t.discard()
		}
		t.mu.Lock()
		served := t.served
		t.mu.Unlock()
		if !errors.Is(err, ErrChanged) || attempt > 0 || served {
			return err
		}
		t.cfg.Logger.Info("object changed upstream during fetch, fetching it again",
			"source", t.src.String(), "key", obj.Key, "etag", obj.ETag)
	}
}

func (t *Transfer) stat(ctx context.Context) (Object, error) {
	for attempt := 1; ; attempt++ {
		obj, err := t.src.Stat(ctx, t.hint.Key)
		if err == nil {
			if t.hint.ETag == obj.ETag && t.hint.Size == obj.Size {
				for name, sum := range t.hint.Checksums {
					if _, ok := obj.Checksums[name]; !ok {
						if obj.Checksums == nil {
							obj.Checksums = map[string]string{}
						}
						obj.Checksums[name] = sum
					}
				}
			}
			return obj, nil
		}
		if permanent(err) || ctx.Err() != nil || attempt > t.cfg.Retries {
			return Object{}, fmt.Errorf("modelcache: fetch: %w", err)
		}
		t.cfg.Logger.Debug("stat failed, retrying", "source", t.src.String(), "key", t.hint.Key, "attempt", attempt, "err", err)
		if err := sleep(ctx, t.cfg.Backoff(attempt)); err != nil {
			return Object{}, err
		}
	}
}

// discard removes the partial file and the journal.
func (t *Transfer) discard() {
	for _, p := range []string{t.dst + ".partial", t.dst + ".journal", t.dst + ".journal.tmp"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.cfg.Logger.Warn("cannot remove file of a failed fetch", "file", p, "err", err)
		}
	}
}

// round is one pass at fetching one version of the object.
type round struct {
	t      *Transfer
	obj    Object
	chunk  int64
	ranged bool
	f      *os.File
	jpath  string

	jmu       sync.Mutex // serializes journal writes; guards j, unsynced, syncing
	j         *journal
	unsynced  int64
	syncing   bool
	syncEvery int64

	// With a CRC to verify, each chunk's CRC is computed as its bytes arrive (crcs[i], written
	// by the chunk's worker) and the object's is combined from them at the end.
	crc  *crcKind
	crcs []uint64
}

func (t *Transfer) round(ctx context.Context, obj Object) error {
	r := &round{t: t, obj: obj, chunk: t.cfg.ChunkSize, ranged: true, jpath: t.dst + ".journal"}
	if rs, ok := t.src.(Ranged); ok && !rs.Ranged() {
		r.ranged, r.chunk = false, max(obj.Size, 1)
	}
	r.syncEvery = 16 * r.chunk
	n := int((obj.Size + r.chunk - 1) / r.chunk)
	if err := r.open(n); err != nil {
		return fmt.Errorf("modelcache: fetch %s %q: %w", t.src, obj.Key, err)
	}
	defer r.f.Close()

	state := make([]chunkState, n)
	resumedChunks := newBitmap(n)
	var resumed int64
	missing := 0
	for i := range state {
		if r.j.Done.has(i) {
			state[i] = chunkDone
			resumedChunks.set(i)
			resumed += r.size(i)
		} else {
			missing++
		}
	}
	t.mu.Lock()
	t.obj, t.chunk, t.state, t.cursor, t.urgent, t.prefix, t.resumed = obj, r.chunk, state, 0, nil, 0, resumed
	t.filled = make([]int64, n)
	for t.prefix < n && state[t.prefix] == chunkDone {
		t.prefix++
	}
	for _, w := range t.wants {
		t.want(w.off, w.n)
	}
	t.wants = nil
	t.broadcast()
	t.mu.Unlock()

	g, gctx := errgroup.WithContext(ctx)
	sum, verify := pickChecksum(obj)
	verify = verify && !t.cfg.NoVerify
	if verify {
		if crc, ok := crcKinds[sum.name]; ok {
			r.crc, r.crcs = crc, make([]uint64, n)
			g.Go(func() error { return r.crcResumed(gctx, resumedChunks) })
		} else {
			g.Go(func() error { return r.verify(gctx, sum) })
		}
	}
	streams := min(t.cfg.Streams, missing)
	if !r.ranged {
		streams = min(1, missing)
	}
	for range streams {
		g.Go(func() error { return r.work(gctx) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if verify && r.crc != nil {
		if err := r.checkCRC(sum); err != nil {
			return err
		}
	}
	return r.finish()
}

// open opens the partial file and its journal: those of an earlier fetch of the same object
// version when they are there, else new ones.
func (r *round) open(n int) error {
	dst := r.t.dst
	partial := dst + ".partial"
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if j, err := readJournal(r.jpath); err == nil && r.obj.ETag != "" && j.Size == r.obj.Size &&
		j.ETag == r.obj.ETag && j.ChunkSize == r.chunk && len(j.Done) == len(newBitmap(n)) && len(j.Synced) == len(j.Done) {
		f, err := os.OpenFile(partial, os.O_RDWR, 0)
		if err == nil {
			if fi, err := f.Stat(); err == nil && fi.Size() == r.obj.Size {
				j.Done = j.trusted(bootID()).clone()
				j.Boot = bootID()
				r.f, r.j = f, j
				return nil
			}
			f.Close()
		}
	}
	r.t.discard()
	f, err := os.OpenFile(partial, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := preallocate(f, r.obj.Size); err != nil {
		f.Close()
		return err
	}
	j := &journal{
		Version: journalVersion, Size: r.obj.Size, ETag: r.obj.ETag, ChunkSize: r.chunk,
		Boot: bootID(), Done: newBitmap(n), Synced: newBitmap(n),
	}
	if err := j.write(r.jpath, true); err != nil {
		f.Close()
		return err
	}
	r.f, r.j = f, j
	return nil
}

// preallocate reserves size bytes for f, so that a full disk shows now rather than mid-fetch
// and the file is not fragmented by parallel writes; where the file system cannot, it sets the
// size only.
func preallocate(f *os.File, size int64) error {
	if size == 0 {
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = unix.Fallocate(int(fd), 0, 0, size)
			if ferr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	switch {
	case ferr == nil:
		return nil
	case errors.Is(ferr, unix.EOPNOTSUPP) || errors.Is(ferr, unix.ENOSYS) || errors.Is(ferr, unix.EINVAL):
		return f.Truncate(size)
	}
	return fmt.Errorf("preallocate %d bytes: %w", size, ferr)
}

func (r *round) size(i int) int64 {
	return min(r.chunk, r.obj.Size-int64(i)*r.chunk)
}

func (r *round) work(ctx context.Context) error {
	buf := make([]byte, min(r.chunk, 1<<20))
	var h hash.Hash
	if r.crc != nil {
		h = r.crc.new()
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		i, ok := r.t.take()
		if !ok {
			return nil
		}
		if err := r.fetchChunk(ctx, i, buf, h); err != nil {
			return err
		}
		if h != nil {
			r.crcs[i] = r.crc.value(h)
		}
		if err := r.complete(i); err != nil {
			return err
		}
	}
}

// fetchChunk reads chunk i into the partial file, retrying with back-off from where a failed
// attempt stopped (from the start when the source serves no ranges), and hashes it into h
// when h is not nil.
func (r *round) fetchChunk(ctx context.Context, i int, buf []byte, h hash.Hash) error {
	off, n := int64(i)*r.chunk, r.size(i)
	var got int64
	failures := 0
	if h != nil {
		h.Reset()
	}
	for got < n {
		k, err := r.readRange(ctx, i, off+got, n-got, buf, h)
		got += k
		if err == nil {
			continue
		}
		if permanent(err) || ctx.Err() != nil {
			return err
		}
		if k > 0 {
			failures = 0
		}
		failures++
		if failures > r.t.cfg.Retries {
			return fmt.Errorf("modelcache: fetch %s %q bytes %d-%d: %d attempts failed, the last: %w",
				r.t.src, r.obj.Key, off, off+n-1, failures, err)
		}
		if !r.ranged {
			got = 0
			if h != nil {
				h.Reset()
			}
		}
		r.t.cfg.Logger.Debug("range failed, retrying", "source", r.t.src.String(), "key", r.obj.Key,
			"offset", off+got, "attempt", failures, "err", err)
		if err := sleep(ctx, r.t.cfg.Backoff(failures)); err != nil {
			return err
		}
	}
	return nil
}

// readRange reads n bytes at off into the partial file (and h) and returns how many it wrote;
// it gives up on the request when no byte arrives for the stall timeout.
func (r *round) readRange(ctx context.Context, i int, off, n int64, buf []byte, h hash.Hash) (int64, error) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stalled atomic.Bool
	stall := r.t.cfg.StallTimeout
	timer := time.AfterFunc(stall, func() { stalled.Store(true); cancel() })
	defer timer.Stop()
	why := func(err error) error {
		if stalled.Load() && ctx.Err() == nil {
			return fmt.Errorf("no data for %v: %w", stall, errStalled)
		}
		return err
	}

	rc, err := r.t.src.ReadRange(rctx, r.obj.Key, off, n)
	if err != nil {
		return 0, why(err)
	}
	defer rc.Close()
	if e, ok := rc.(interface{ ETag() string }); ok && r.obj.ETag != "" && e.ETag() != "" && e.ETag() != r.obj.ETag {
		return 0, fmt.Errorf("modelcache: fetch %s %q: ETag %s, at the start %s: %w", r.t.src, r.obj.Key, e.ETag(), r.obj.ETag, ErrChanged)
	}
	body := stallReader{r: rc, timer: timer, d: stall}
	var got int64
	for got < n {
		k, err := io.ReadFull(body, buf[:min(int64(len(buf)), n-got)])
		if k > 0 {
			if _, werr := r.f.WriteAt(buf[:k], off+got); werr != nil {
				return got, permanentError{werr}
			}
			if h != nil {
				h.Write(buf[:k])
			}
			got += int64(k)
			r.t.progress(int64(k))
			r.t.fill(i, off+got)
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("response ended after %d of %d bytes", got, n)
			}
			return got, why(err)
		}
	}
	return got, nil
}

var errStalled = errors.New("stalled")

// stallReader restarts the stall timer whenever bytes arrive.
type stallReader struct {
	r     io.Reader
	timer *time.Timer
	d     time.Duration
}

func (s stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.timer.Reset(s.d)
	}
	return n, err
}

// complete records chunk i in the journal before its worker takes another chunk, so that at
// any time at most one chunk per stream is written but not recorded. Every syncEvery bytes it
// also fsyncs the partial file and records what that made durable.
func (r *round) complete(i int) error {
	r.t.markDone(i)
	r.startWriteback(i)
	r.jmu.Lock()
	defer r.jmu.Unlock()
	r.j.Done.set(i)
	if err := r.j.write(r.jpath, false); err != nil {
		return permanentError{err}
	}
	r.unsynced += r.size(i)
	if r.unsynced < r.syncEvery || r.syncing {
		return nil
	}
	synced := r.j.Done.clone()
	r.unsynced, r.syncing = 0, true
	r.jmu.Unlock()
	err := r.f.Sync()
	r.jmu.Lock()
	r.syncing = false
	if err == nil {
		r.j.Synced = synced
		err = r.j.write(r.jpath, true)
	}
	if err != nil {
		return permanentError{err}
	}
	return nil
}

// startWriteback asks the kernel to start writing chunk i to disk now, without waiting: the
// disk then writes while the download goes on, and the fsyncs (every syncEvery bytes, and
// before the rename) find little left to do. Where the file system cannot, nothing happens.
func (r *round) startWriteback(i int) {
	rc, err := r.f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SyncFileRange(int(fd), int64(i)*r.chunk, r.size(i), unix.SYNC_FILE_RANGE_WRITE)
	})
}

// checksum is the one checksum a fetch verifies.
type checksum struct {
	name string
	want []byte
}

// checksumOrder is the order of preference among an object's checksums: any one detects
// corruption in transit, so the fetch verifies the cheapest to compute. CRCs come first for a
// second reason: a chunk's CRC is computed as its bytes arrive, in any order, and the object's
// is combined from the chunks' at the end; MD5 and SHA need the bytes in order, so they are
// hashed from the file behind the contiguous written prefix, and with chunks landing in
// parallel some of that hashing is left for after the last byte.
var checksumOrder = []string{"crc64nvme", "crc32c", "crc32", "sha256", "md5", "sha1"}

func pickChecksum(obj Object) (checksum, bool) {
	for _, name := range checksumOrder {
		if v, ok := obj.Checksums[name]; ok {
			if b, err := hex.DecodeString(v); err == nil && len(b) == newHash(name).Size() {
				return checksum{name, b}, true
			}
		}
	}
	return checksum{}, false
}

func newHash(name string) hash.Hash {
	switch name {
	case "crc64nvme":
		return crc64nvme.New()
	case "crc32c":
		return crc32.New(castagnoli)
	case "crc32":
		return crc32.NewIEEE()
	case "sha256":
		return sha256.New()
	case "md5":
		return md5.New()
	case "sha1":
		return sha1.New()
	}
	panic("modelcache: unknown checksum " + name)
}

// crcResumed computes the CRCs of the chunks an earlier fetch wrote, from the file.
func (r *round) crcResumed(ctx context.Context, chunks bitmap) error {
	h := r.crc.new()
	buf := make([]byte, min(r.chunk, 1<<20))
	for i := range r.crcs {
		if !chunks.has(i) {
			continue
		}
		h.Reset()
		off, n := int64(i)*r.chunk, r.size(i)
		for done := int64(0); done < n; {
			if err := ctx.Err(); err != nil {
				return err
			}
			k, err := r.f.ReadAt(buf[:min(int64(len(buf)), n-done)], off+done)
			if err != nil {
				return fmt.Errorf("modelcache: fetch %s %q: verify: %w", r.t.src, r.obj.Key, err)
			}
			h.Write(buf[:k])
			done += int64(k)
		}
		r.crcs[i] = r.crc.value(h)
	}
	return nil
}

// checkCRC combines the chunks' CRCs and compares the result with the store's.
func (r *round) checkCRC(sum checksum) error {
	var total uint64
	for i, c := range r.crcs {
		if i == 0 {
			total = c
		} else {
			total = r.crc.combine(total, c, r.size(i))
		}
	}
	got := r.crc.bytes(total)
	if !bytes.Equal(got, sum.want) {
		return fmt.Errorf("modelcache: fetch %s %q: %s %x, the store says %x: %w", r.t.src, r.obj.Key, sum.name, got, sum.want, ErrCorrupt)
	}
	return nil
}

// crcKind is a reflected CRC with all-ones initial value and final XOR (CRC-32, CRC-32C,
// CRC-64/NVME): such CRCs of two pieces combine into the CRC of the two end to end.
type crcKind struct {
	width int
	poly  uint64 // reversed
	new   func() hash.Hash
	x2n   [68]uint64 // x^(2^k) mod poly, for combine: k up to 3+63 (bits of a length in bytes)
}

var crcKinds = map[string]*crcKind{
	"crc32":     newCRCKind(32, crc32.IEEE, func() hash.Hash { return crc32.NewIEEE() }),
	"crc32c":    newCRCKind(32, crc32.Castagnoli, func() hash.Hash { return crc32.New(castagnoli) }),
	"crc64nvme": newCRCKind(64, 0x9a6c9329ac4bc9b5, func() hash.Hash { return crc64nvme.New() }),
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func newCRCKind(width int, poly uint64, newHash func() hash.Hash) *crcKind {
	k := &crcKind{width: width, poly: poly, new: newHash}
	p := uint64(1) << (width - 2) // x^1
	for i := range k.x2n {
		k.x2n[i] = p
		p = k.multmodp(p, p)
	}
	return k
}

// value is h's sum as a number.
func (k *crcKind) value(h hash.Hash) uint64 {
	var v uint64
	for _, b := range h.Sum(nil) {
		v = v<<8 | uint64(b)
	}
	return v
}

// bytes is v as the store encodes it: big-endian, width bits.
func (k *crcKind) bytes(v uint64) []byte {
	b := make([]byte, k.width/8)
	for i := range b {
		b[len(b)-1-i] = byte(v >> (8 * i))
	}
	return b
}

// multmodp is a*b modulo the polynomial, in the reflected representation (zlib's).
func (k *crcKind) multmodp(a, b uint64) uint64 {
	m := uint64(1) << (k.width - 1)
	var p uint64
	for {
		if a&m != 0 {
			p ^= b
			if a&(m-1) == 0 {
				return p
			}
		}
		m >>= 1
		if b&1 != 0 {
			b = b>>1 ^ k.poly
		} else {
			b >>= 1
		}
	}
}

// combine is the CRC of A then B, from crcA, crcB and B's length in bytes (zlib's
// crc32_combine, for any width).
func (k *crcKind) combine(crcA, crcB uint64, lenB int64) uint64 {
	// p = x^(8*lenB), from x^0 by the bits of lenB: x2n[i] is x^(2^i), and a byte is x^(2^3).
	p := uint64(1) << (k.width - 1)
	for n, i := uint64(lenB), 3; n != 0; n, i = n>>1, i+1 {
		if n&1 != 0 {
			p = k.multmodp(k.x2n[i], p)
		}
	}
	return k.multmodp(p, crcA) ^ crcB
}

// verify hashes the partial file from its start as the written prefix grows (reading back
// from the page cache: chunks land out of order) and compares the sum once the whole file is
// in. After a resume it hashes what is already there first.
func (r *round) verify(ctx context.Context, sum checksum) error {
	h := newHash(sum.name)
	buf := make([]byte, 1<<20)
	var hashed int64
	for hashed < r.obj.Size {
		end, changed := r.t.doneBytes()
		if end <= hashed {
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		for hashed < end {
			k, err := r.f.ReadAt(buf[:min(int64(len(buf)), end-hashed)], hashed)
			if err != nil {
				return fmt.Errorf("modelcache: fetch %s %q: verify: %w", r.t.src, r.obj.Key, err)
			}
			h.Write(buf[:k])
			hashed += int64(k)
		}
	}
	if got := h.Sum(nil); !bytes.Equal(got, sum.want) {
		return fmt.Errorf("modelcache: fetch %s %q: %s %x, the store says %x: %w", r.t.src, r.obj.Key, sum.name, got, sum.want, ErrCorrupt)
	}
	return nil
}

// finish makes the verified partial file durable and renames it to dst.
func (r *round) finish() error {
	dst := r.t.dst
	fi, err := r.f.Stat()
	if err == nil && fi.Size() != r.obj.Size {
		err = fmt.Errorf("size %d, want %d", fi.Size(), r.obj.Size)
	}
	if err == nil {
		err = r.f.Sync()
	}
	if cerr := r.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(dst+".partial", dst)
	}
	if err == nil {
		err = syncDir(filepath.Dir(dst))
	}
	if err != nil {
		return fmt.Errorf("modelcache: fetch %s %q: %w", r.t.src, r.obj.Key, err)
	}
	if err := os.Remove(r.jpath); err != nil {
		r.t.cfg.Logger.Warn("cannot remove journal of a finished fetch", "file", r.jpath, "err", err)
	}
	return nil
}

// permanentError is a failure retrying does not mend (the local disk's).
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

func permanent(err error) bool {
	var p permanentError
	return errors.As(err, &p) || errors.Is(err, ErrAccessDenied) || errors.Is(err, ErrNotFound) ||
		errors.Is(err, ErrChanged) || errors.Is(err, ErrCorrupt) || errors.Is(err, errNoRanges) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
