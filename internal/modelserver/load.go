package modelserver

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// How Load brings the weights in. The fast loaders (Run:ai's model streamer,
// fastsafetensors, the safetensors streaming in vLLM and SGLang) read the
// header first, then the data section with many large reads in flight at
// once, into memory of their own: over FUSE and network mounts a page fault
// through a mapping fetches a small piece at a time, reported 30 to 50 times
// slower than large reads. Mapping stays available (LoadOptions.Mmap) for
// replicas of one model on one machine, which then share the page cache's
// copy, and from a warm page cache it is the faster of the two, as it fills
// no memory of its own. Reading is the default all the same: a cold load
// from a mount is the one that must be fast, and weights read into the
// server's memory are not dropped under memory pressure to be paged back in,
// through the mount, while it serves.

// DefaultLoadParallelism is LoadOptions.Parallelism when 0: the reads of the
// weights in flight at once. BenchmarkLoad chose it (256 MiB from the page
// cache, 2 CPUs): 1 reader loads at 55% of the anchor's rate (os.ReadFile),
// 8 at 104%, 16 no faster; more reads in flight than CPUs costs nothing
// here, and they are what hides the latency of a network or FUSE mount and
// spreads the copy over a larger machine's cores.
const DefaultLoadParallelism = 8

// loadChunk is the size of one read: large enough that a read's fixed cost
// (a system call, huge-page faults; a round trip on a network mount) is
// small beside it, small enough to spread a model of a few hundred MiB over
// the readers. BenchmarkLoad/chunk: 16 MiB loads 10 to 20% faster than 1,
// 4, 8 or 32 MiB.
const loadChunk = 16 << 20

// headerProbe is how much of the file the first read asks for: the 8-byte
// length and, for every model Init writes, the whole JSON header, so that
// the header costs one read.
const headerProbe = 64 << 10

// Load methods, as LoadStats.Method says them.
const (
	LoadRead = "read" // parallel reads into memory of the server's own
	LoadMmap = "mmap" // a shared read-only mapping, paged in by the check
)

// LoadOptions say how Load brings the weights in.
type LoadOptions struct {
	// Parallelism is how many reads of the weights are in flight at once
	// (with Mmap: how many goroutines page the mapping in);
	// DefaultLoadParallelism if 0.
	Parallelism int
	// Mmap maps the weights read-only and shared instead of reading them:
	// replicas of the model on one machine share one copy in the page cache,
	// but a cold load pages in through faults.
	Mmap bool

	chunk int // bytes per read, loadChunk if 0: for BenchmarkLoad
}

// LoadStats is what a load took.
type LoadStats struct {
	Bytes       int64         // of the weights file
	Duration    time.Duration // from opening config.json to the last weight checked
	Parallelism int
	Method      string // LoadRead or LoadMmap
}

// MBPerSecond is the load's rate in decimal megabytes (10^6 bytes) per second.
func (s LoadStats) MBPerSecond() float64 {
	if s.Duration <= 0 {
		return 0
	}
	return float64(s.Bytes) / 1e6 / s.Duration.Seconds()
}

// Load loads the model in dir: config.json and the tokenizer, then the
// weights file's header, checked strictly against the file and config.json,
// then the weights, each checked once to be finite (a NaN or ±Inf is
// rejected), so that the time it takes grows with the model's size as a
// real server's does. It does not hash the weights; Verify does. Errors
// about the files wrap ErrInvalidModel; ctx ending stops it with ctx's error.
func Load(ctx context.Context, dir string, opts LoadOptions) (*Model, error) {
	if opts.Parallelism < 0 {
		return nil, fmt.Errorf("modelserver: load %s: parallelism %d is negative", dir, opts.Parallelism)
	}
	if opts.Parallelism == 0 {
		opts.Parallelism = DefaultLoadParallelism
	}
	if opts.chunk == 0 {
		opts.chunk = loadChunk
	}
	m, err := open(ctx, dir, opts)
	if err != nil {
		return nil, fmt.Errorf("modelserver: load %s: %w", dir, err)
	}
	return m, nil
}

func open(ctx context.Context, dir string, opts LoadOptions) (_ *Model, err error) {
	start := time.Now()
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		return nil, fmt.Errorf("safetensors data is little-endian and this machine is not")
	}
	cfg, err := readConfig(filepath.Join(dir, ConfigFile))
	if err != nil {
		return nil, err
	}
	tokPath := filepath.Join(dir, TokenizerFile)
	voc, err := readTokenizer(tokPath)
	if err != nil {
		return nil, err
	}
	if len(voc.words) != cfg.VocabSize {
		return nil, fmt.Errorf("%w: %s has %d tokens, config.json says vocab_size %d", ErrInvalidModel, tokPath, len(voc.words), cfg.VocabSize)
	}

	path := filepath.Join(dir, WeightsFile)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidModel, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if size < 8 || size > math.MaxInt {
		return nil, fmt.Errorf("%w: %s: file is %d bytes, too short for a safetensors file", ErrInvalidModel, path, size)
	}
	head, err := readHeader(f, size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	h, err := parseHeaderPrefix(head, size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := checkAgainstConfig(h, cfg, size); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidModel, path, err)
	}

	// Only now, with the header known good, the weights.
	var (
		data    []byte
		release func() error
		read    func(b []byte, off int64) error
		method  = LoadRead
	)
	if opts.Mmap {
		method = LoadMmap
		data, release, err = mapFile(f, int(size))
		if err != nil {
			return nil, fmt.Errorf("mmap %s: %w", path, err)
		}
	} else {
		data, release, err = allocWeights(int(size))
		if err != nil {
			return nil, fmt.Errorf("%s: memory for %d bytes of weights: %w", path, size, err)
		}
		copy(data, head)
		read = func(b []byte, off int64) error {
			if _, err := f.ReadAt(b, off); err != nil {
				if errors.Is(err, io.EOF) {
					return fmt.Errorf("%w: %s: file ends before byte %d: truncated while loading?", ErrInvalidModel, path, off+int64(len(b)))
				}
				return fmt.Errorf("read %s at byte %d: %w", path, off, err)
			}
			return nil
		}
	}
	defer func() {
		if err != nil {
			release()
		}
	}()

	m := &Model{
		info:    newInfo(dir, cfg, h.Tensors),
		vocab:   voc,
		hidden:  cfg.HiddenSize,
		file:    data,
		release: release,
	}
	views := make([][]float32, len(h.Tensors))
	for i, t := range h.Tensors {
		b := data[h.DataStart+t.Begin : h.DataStart+t.End]
		if uintptr(unsafe.Pointer(unsafe.SliceData(b)))%4 != 0 {
			return nil, fmt.Errorf("%w: %s: tensor %q is not 4-byte aligned in the file", ErrInvalidModel, path, t.Name)
		}
		views[i] = unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/4)
	}
	m.embed, m.layers, m.head = views[0], views[1:len(views)-1], views[len(views)-1]

	check := func(off int64, b []byte) error { return checkFinite(path, h, off, b) }
	if err := fill(ctx, data, h.DataStart, opts.Parallelism, opts.chunk, read, check); err != nil {
		return nil, err
	}
	if !opts.Mmap {
		if err := sealWeights(data); err != nil {
			return nil, fmt.Errorf("%s: make the weights read-only: %w", path, err)
		}
	}
	m.stats = LoadStats{Bytes: size, Duration: time.Since(start), Parallelism: opts.Parallelism, Method: method}
	return m, nil
}

// readHeader reads the 8-byte length and the JSON header after it, in one
// read for any header shorter than headerProbe.
func readHeader(f io.ReaderAt, size int64) ([]byte, error) {
	head := make([]byte, min(size, headerProbe))
	if _, err := f.ReadAt(head, 0); err != nil {
		return nil, fmt.Errorf("%w: reading the header: %w", ErrInvalidModel, err)
	}
	n, err := headerLen(head, size)
	if err != nil {
		return nil, err
	}
	if have := int64(len(head)); 8+n > have {
		head = append(head, make([]byte, 8+n-have)...)
		if _, err := f.ReadAt(head[have:], have); err != nil {
			return nil, fmt.Errorf("%w: reading the header: %w", ErrInvalidModel, err)
		}
	}
	return head[:8+n], nil
}

// fill brings in the data section, data[start:], in chunks of chunk bytes
// (a multiple of 4) handed out in file order to par workers (so that, as a whole, reading
// moves front to back, as readahead on a network mount expects): read fills
// a chunk, unless it is nil because data is a mapping, then check scans it.
// A fault on a mapping (the file truncated under it) becomes an error. Of
// several failing chunks, the error of the one nearest the front of the file
// is returned, as a sequential scan would find it; ctx ending stops it.
func fill(ctx context.Context, data []byte, start int64, par, chunk int, read func(b []byte, off int64) error, check func(off int64, b []byte) error) error {
	n, size := int64(len(data))-start, int64(chunk)
	chunks := (n + size - 1) / size
	var (
		next    atomic.Int64
		stop    atomic.Bool
		mu      sync.Mutex
		errOff  int64 = math.MaxInt64
		firstEr error
	)
	fail := func(off int64, err error) {
		mu.Lock()
		if off < errOff {
			errOff, firstEr = off, err
		}
		mu.Unlock()
		stop.Store(true)
	}
	one := func(off int64) (err error) {
		b := data[off:min(off+size, int64(len(data)))]
		if read != nil {
			if err := read(b, off); err != nil {
				return err
			}
		}
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("%w: fault reading the mapped weights at byte %d (changed on disk?): %v", ErrInvalidModel, off, r)
			}
		}()
		return check(off, b)
	}
	work := func() {
		if read == nil {
			defer debug.SetPanicOnFault(debug.SetPanicOnFault(true)) // per goroutine
		}
		for !stop.Load() {
			i := next.Add(1) - 1
			if i >= chunks {
				return
			}
			off := start + i*size
			if err := ctx.Err(); err != nil {
				fail(off, err)
				return
			}
			if err := one(off); err != nil {
				fail(off, err)
				return
			}
		}
	}
	var wg sync.WaitGroup
	for range min(int64(par), chunks) - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
	return firstEr
}

// checkFinite rejects a chunk of the data section (off is its file offset)
// holding a value that is not finite (NaN or ±Inf): Init writes none, and
// one would poison every logit after it. Every tensor is F32
// (checkAgainstConfig), so the data section is a run of float32s.
func checkFinite(path string, h header, off int64, b []byte) error {
	i := nonFinite(b)
	if i < 0 {
		return nil
	}
	at := off - h.DataStart + int64(i)*4
	t := h.Tensors[sort.Search(len(h.Tensors), func(k int) bool { return h.Tensors[k].End > at })]
	v := math.Float32frombits(binary.LittleEndian.Uint32(b[i*4:]))
	return fmt.Errorf("%w: %s: tensor %q: value %d is %v", ErrInvalidModel, path, t.Name, (at-t.Begin)/4, v)
}

// nonFinite returns the index of the first float32 of b (little-endian,
// len(b) a multiple of 4) whose exponent bits are all ones, NaN or ±Inf, or
// -1 if there is none. It tests two values per 64-bit word, as the check
// runs at memory speed only if it is cheap beside the copy: adding 1 to a
// value's 8 exponent bits carries into its sign bit only when they are all
// ones, and never into the next value.
func nonFinite(b []byte) int {
	const exp, one, sign = 0x7f8000007f800000, 0x0080000000800000, 0x8000000080000000
	scalar := func(lo, hi int) int {
		for i := lo; i < hi; i++ {
			if binary.LittleEndian.Uint32(b[i*4:])&0x7f800000 == 0x7f800000 {
				return i
			}
		}
		return -1
	}
	n := len(b) / 4
	lo := 0 // values before the first 8-byte aligned word
	if uintptr(unsafe.Pointer(unsafe.SliceData(b)))%8 != 0 {
		lo = min(1, n)
		if i := scalar(0, lo); i >= 0 {
			return i
		}
	}
	words := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(b[lo*4:]))), (n-lo)/2)
	const block = 1024 // words between tests of the accumulated bits, a multiple of 8
	for w0 := 0; w0 < len(words); w0 += block {
		blk := words[w0:min(w0+block, len(words))]
		var a, c uint64 // two accumulators, eight words an iteration: twice the speed of one a word
		i := 0
		for ; i+8 <= len(blk); i += 8 {
			w := blk[i : i+8 : i+8]
			a |= (w[0]&exp + one) | (w[1]&exp + one) | (w[2]&exp + one) | (w[3]&exp + one)
			c |= (w[4]&exp + one) | (w[5]&exp + one) | (w[6]&exp + one) | (w[7]&exp + one)
		}
		for ; i < len(blk); i++ {
			a |= blk[i]&exp + one
		}
		if (a|c)&sign != 0 {
			return scalar(lo+2*w0, lo+2*(w0+len(blk)))
		}
	}
	return scalar(lo+2*len(words), n)
}
