package modelserver

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"
)

// TestLoadMethods: every way of loading gives the same bytes, the same
// tokens and stats that say how it was done.
func TestLoadMethods(t *testing.T) {
	dir := newModelDir(t, 4<<20)
	want, err := os.ReadFile(filepath.Join(dir, WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	var tokens []int
	tests := []struct {
		name       string
		opts       LoadOptions
		wantPar    int
		wantMethod string
	}{
		{"default", LoadOptions{}, DefaultLoadParallelism, LoadRead},
		{"one reader", LoadOptions{Parallelism: 1}, 1, LoadRead},
		{"3 readers, 64 KiB reads", LoadOptions{Parallelism: 3, chunk: 64 << 10}, 3, LoadRead},
		{"more readers than reads", LoadOptions{Parallelism: 64, chunk: 1 << 20}, 64, LoadRead},
		{"reads not a multiple of the data", LoadOptions{Parallelism: 2, chunk: 4 << 10 * 3}, 2, LoadRead},
		{"mmap", LoadOptions{Mmap: true}, DefaultLoadParallelism, LoadMmap},
		{"mmap, one goroutine, 64 KiB", LoadOptions{Mmap: true, Parallelism: 1, chunk: 64 << 10}, 1, LoadMmap},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Load(context.Background(), dir, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if !bytes.Equal(m.file, want) {
				t.Fatal("the loaded weights differ from the file")
			}
			st := m.LoadStats()
			if st.Bytes != int64(len(want)) || st.Parallelism != tt.wantPar || st.Method != tt.wantMethod || st.Duration <= 0 || st.MBPerSecond() <= 0 {
				t.Errorf("LoadStats = %+v (%.0f MB/s); want %d bytes, parallelism %d, method %s", st, st.MBPerSecond(), len(want), tt.wantPar, tt.wantMethod)
			}
			seq := m.NewSequence(m.Encode("the sea"))
			var ids []int
			for range 6 {
				id, _ := seq.Next()
				ids = append(ids, id)
			}
			if tokens == nil {
				tokens = ids
			} else if !slices.Equal(ids, tokens) {
				t.Errorf("tokens %v, the first method gave %v", ids, tokens)
			}
		})
	}
}

func TestLoadOptionsErrors(t *testing.T) {
	if _, err := Load(context.Background(), newModelDir(t, 1<<20), LoadOptions{Parallelism: -1}); err == nil || !strings.Contains(err.Error(), "parallelism -1") {
		t.Errorf("Load with parallelism -1: %v", err)
	}
}

// TestLoadFirstBadValue: with several non-finite values in chunks read at
// once, the error names the first in the file, as one reader would.
func TestLoadFirstBadValue(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts LoadOptions
	}{
		{"read", LoadOptions{Parallelism: 8, chunk: 4 << 10}},
		{"mmap", LoadOptions{Parallelism: 8, chunk: 4 << 10, Mmap: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := newModelDir(t, 1<<20)
			info, _ := Init(t.TempDir(), InitOptions{Size: 1 << 20, Seed: 7})
			last := info.Layers + 1
			patchWeights(t, dir, last, 0x7fc00000) // lm_head: the end of the file
			patchWeights(t, dir, 2, math.Float32bits(float32(math.Inf(1))))
			_, err := Load(context.Background(), dir, tt.opts)
			if want := `tensor "model.layers.1.weight": value 10 is +Inf`; err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, ErrInvalidModel) {
				t.Errorf("Load: %v; want ErrInvalidModel and %q", err, want)
			}
		})
	}
}

func TestLoadCanceled(t *testing.T) {
	dir := newModelDir(t, 1<<20)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, mmap := range []bool{false, true} {
		if m, err := Load(ctx, dir, LoadOptions{Mmap: mmap}); !errors.Is(err, context.Canceled) {
			if m != nil {
				m.Close()
			}
			t.Errorf("Load (mmap %v) with ctx done: %v; want context.Canceled", mmap, err)
		}
	}
}

// TestLoadedWeightsReadOnly: the memory the weights were read into is
// read-only afterwards, as a mapping of the file is.
func TestLoadedWeightsReadOnly(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("weights are sealed only on Linux, where syscall has Mprotect")
	}
	m, err := Load(context.Background(), newModelDir(t, 1<<20), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	faulted := func() (faulted bool) {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer func() { faulted = recover() != nil }()
		m.file[len(m.file)-1] ^= 1
		return false
	}()
	if !faulted {
		t.Error("a write to the loaded weights did not fault")
	}
}

// TestFill: every chunk is read once, whatever the parallelism, and of
// several failures the one nearest the front of the file is returned.
func TestFill(t *testing.T) {
	const start, chunk = 8, 16
	tests := []struct {
		name  string
		size  int   // of data, start included
		par   int   // workers
		fails []int // chunks whose read fails
		want  int   // chunk whose error is returned; -1: none
	}{
		{"one chunk", start + 4, 4, nil, -1},
		{"exact chunks", start + 10*chunk, 3, nil, -1},
		{"partial last chunk", start + 10*chunk + 4, 4, nil, -1},
		{"no data", start, 4, nil, -1},
		{"one worker", start + 7*chunk, 1, nil, -1},
		{"failure", start + 10*chunk, 4, []int{6}, 6},
		{"first of several", start + 40*chunk, 8, []int{31, 17, 3, 35}, 3},
		{"last chunk", start + 10*chunk + 4, 2, []int{10}, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := make([]byte, tt.size)
			var mu sync.Mutex
			reads := map[int64]int{}
			read := func(b []byte, off int64) error {
				mu.Lock()
				reads[off]++
				mu.Unlock()
				if (off-start)%chunk != 0 || len(b) > chunk {
					return fmt.Errorf("read of %d bytes at %d: not one chunk", len(b), off)
				}
				if slices.Contains(tt.fails, int((off-start)/chunk)) {
					return fmt.Errorf("chunk %d fails", (off-start)/chunk)
				}
				for i := range b {
					b[i] = byte(off + int64(i))
				}
				return nil
			}
			check := func(off int64, b []byte) error { return nil }
			err := fill(context.Background(), data, start, tt.par, chunk, read, check)
			if tt.want >= 0 {
				if want := fmt.Sprintf("chunk %d fails", tt.want); err == nil || err.Error() != want {
					t.Fatalf("fill: %v; want %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for i := start; i < tt.size; i++ {
				if data[i] != byte(i) {
					t.Fatalf("byte %d = %d, not read", i, data[i])
				}
			}
			for off, n := range reads {
				if n != 1 {
					t.Errorf("chunk at %d read %d times", off, n)
				}
			}
			if want := (tt.size - start + chunk - 1) / chunk; len(reads) != want {
				t.Errorf("%d chunks read, want %d", len(reads), want)
			}
		})
	}
}

// TestNonFinite checks the word-at-a-time scan against a value-at-a-time
// one, at every alignment and position around its blocks' edges.
func TestNonFinite(t *testing.T) {
	bad := []uint32{0x7f800000, 0xff800000, 0x7fc00000, 0xffffffff, 0x7f800001}
	good := []uint32{0, 0x80000000, 0x7f7fffff, 0xff7fffff, 0x00000001, 0x3f800000, 0x007fffff, 0x7f000000}
	const n = 2*1024*2 + 37 // values: two blocks of 1024 words and a tail
	buf := make([]byte, 4*n+4)
	for _, g := range good {
		for i := 0; i < n; i++ {
			binary.LittleEndian.PutUint32(buf[4+4*i:], g)
		}
		for _, shift := range []int{0, 4} { // the values 8-byte aligned, and not
			vals := buf[4-shift : 4-shift+4*n]
			if got := nonFinite(vals); got != -1 {
				t.Fatalf("all %#x (shift %d): nonFinite = %d, want -1", g, shift, got)
			}
			for _, pos := range []int{0, 1, 2, 7, 8, 9, 2047, 2048, 2049, 4095, 4096, n - 2, n - 1} {
				for _, v := range bad {
					old := binary.LittleEndian.Uint32(vals[4*pos:])
					binary.LittleEndian.PutUint32(vals[4*pos:], v)
					if got := nonFinite(vals); got != pos {
						t.Errorf("%#x at %d among %#x (shift %d): nonFinite = %d", v, pos, g, shift, got)
					}
					if got := nonFinite(vals[:4*pos]); got != -1 {
						t.Errorf("the %d values before it: nonFinite = %d, want -1", pos, got)
					}
					binary.LittleEndian.PutUint32(vals[4*pos:], old)
				}
			}
		}
	}
	if got := nonFinite(nil); got != -1 {
		t.Errorf("nonFinite(nil) = %d", got)
	}
}

// TestReadHeader: the header comes in one read when it is short, in two when
// it is longer than the first read, and a short file is an invalid model.
func TestReadHeader(t *testing.T) {
	small := stFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 1)
	long := stFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`+strings.Repeat(" ", 2*headerProbe), 1)
	tests := []struct {
		name    string
		file    []byte
		size    int64 // as stat said; len(file) if 0
		want    int   // bytes of header returned
		wantErr string
	}{
		{"short header", small, 0, len(small) - 1, ""},
		{"header longer than the first read", long, 0, len(long) - 1, ""},
		{"file shorter than stat said", small[:20], int64(len(small)), 0, "reading the header"},
		{"long header cut short", long[:headerProbe+100], int64(len(long)), 0, "reading the header"},
		{"length past the end", small, 9, 0, "exceeds the 1 bytes that follow it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			size := tt.size
			if size == 0 {
				size = int64(len(tt.file))
			}
			reads := 0
			r := readerAtFunc(func(p []byte, off int64) (int, error) {
				reads++
				return bytes.NewReader(tt.file).ReadAt(p, off)
			})
			head, err := readHeader(r, size)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalidModel) {
					t.Fatalf("readHeader: %v; want ErrInvalidModel and %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !bytes.Equal(head, tt.file[:tt.want]) {
				t.Fatalf("readHeader = %d bytes, %v; want the first %d", len(head), err, tt.want)
			}
			wantReads := 1
			if len(head) > headerProbe {
				wantReads = 2
			}
			if reads != wantReads {
				t.Errorf("%d reads, want %d", reads, wantReads)
			}
			if _, err := parseHeaderPrefix(head, size); err != nil {
				t.Errorf("parseHeaderPrefix of what was read: %v", err)
			}
		})
	}
}

type readerAtFunc func(p []byte, off int64) (int, error)

func (f readerAtFunc) ReadAt(p []byte, off int64) (int, error) { return f(p, off) }

var _ io.ReaderAt = readerAtFunc(nil)
