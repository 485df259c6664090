package modelserver

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Budgets of the model server, as benchmarks (figures in bench/README.md):
//
//	go test -run '^$' -bench . -benchtime 20x ./internal/modelserver/
//
// BenchmarkToken's GB/s is the weight bytes one token reads divided by the
// time it takes: decoding is memory-bound, so it should sit near one core's
// memory bandwidth and ns/token should grow in proportion to the size.

// tokenBytes is what one Sequence.Next reads: every layer, the output
// projection and one row of the embedding.
func tokenBytes(info Info) int64 {
	n := int64(info.Hidden) * 4
	for _, t := range info.Tensors[1:] {
		n += t.Bytes
	}
	return n
}

func BenchmarkToken(b *testing.B) {
	for _, size := range []int64{16 << 20, 64 << 20} {
		b.Run(strconv.FormatInt(size>>20, 10)+"MiB", func(b *testing.B) {
			m, err := Load(context.Background(), newModelDir(b, size), LoadOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			seq := m.NewSequence(m.Encode("the quick brown fox"))
			per := tokenBytes(m.Info())
			b.SetBytes(per)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				seq.Next()
			}
			sec := b.Elapsed().Seconds()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/token")
			b.ReportMetric(float64(per)*float64(b.N)/sec/1e9, "GB/s")
		})
	}
}

// BenchmarkLoad loads a model whose files are in the page cache (a cache-hit
// start: config, tokenizer, header and layout checks, every weight read and
// checked) of $INFERA_BENCH_LOAD_SIZE bytes (256MiB if unset; 1GiB, 64MiB,
// 300000000 also do), against two plain sequential reads of the same files
// by one reader:
//
//	anchor  os.ReadFile of each: read(2) front to back into memory of the
//	        file's size, what a sequential loader does
//	copy    read(2) 16 MiB at a time into one reused buffer, as dd bs=16M
//	        of=/dev/null does: the page cache's copy rate for one reader,
//	        with no memory to fill (an upper bound for one reader)
//
// Both run in every iteration, right after the load and off its timer, so
// that a busy machine slows all three alike: each sub-benchmark reports its
// MB/s (10^6 bytes), the anchor's and the copy's MB/s in the same iterations,
// and %anchor and %copy, its rate as a percentage of theirs. The goal is the
// default, read/p=8, at 80 %anchor or more.
//
//	go test -run '^$' -bench Load -benchtime 10x -count 6 ./internal/modelserver/
//
// read/p=N sweeps LoadOptions.Parallelism, chunk=N the size of one read at
// the default parallelism, mmap/p=N the mapped path, and verify adds the
// sha256 of the whole file.
func BenchmarkLoad(b *testing.B) {
	size := benchLoadSize(b)
	dir := newModelDir(b, size)
	var files []string
	var total int64
	for _, name := range []string{ConfigFile, TokenizerFile, WeightsFile} {
		path := filepath.Join(dir, name)
		st, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		files, total = append(files, path), total+st.Size()
	}
	readFiles := func() {
		for _, path := range files {
			if _, err := os.ReadFile(path); err != nil {
				b.Fatal(err)
			}
		}
	}
	buf := make([]byte, 16<<20)
	copyFiles := func() {
		for _, path := range files {
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			for {
				n, err := f.Read(buf)
				if err == io.EOF || n == 0 {
					break
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			f.Close()
		}
	}
	copyFiles() // into the page cache, whatever Init left there

	run := func(name string, op func()) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(total)
			b.ReportAllocs()
			var anchor, cp time.Duration
			for b.Loop() {
				op()
				b.StopTimer()
				t0 := time.Now()
				readFiles()
				t1 := time.Now()
				copyFiles()
				anchor, cp = anchor+t1.Sub(t0), cp+time.Since(t1)
				b.StartTimer()
			}
			took := b.Elapsed()
			n := float64(total) * float64(b.N) / 1e6
			b.ReportMetric(n/anchor.Seconds(), "anchor-MB/s")
			b.ReportMetric(n/cp.Seconds(), "copy-MB/s")
			b.ReportMetric(100*anchor.Seconds()/took.Seconds(), "%anchor")
			b.ReportMetric(100*cp.Seconds()/took.Seconds(), "%copy")
			b.ReportMetric(took.Seconds()*1e3/float64(b.N), "ms/load")
		})
	}
	load := func(opts LoadOptions, verify bool) func() {
		return func() {
			m, err := Load(context.Background(), dir, opts)
			if err != nil {
				b.Fatal(err)
			}
			if verify {
				if err := m.Verify(); err != nil {
					b.Fatal(err)
				}
			}
			if err := m.Close(); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, p := range []int{1, 2, 4, 8, 16} {
		run(fmt.Sprintf("read/p=%d", p), load(LoadOptions{Parallelism: p}, false))
	}
	for _, c := range []int{1 << 20, 4 << 20, 8 << 20, 16 << 20, 32 << 20} {
		run(fmt.Sprintf("chunk=%dMiB", c>>20), load(LoadOptions{chunk: c}, false))
	}
	for _, p := range []int{1, DefaultLoadParallelism} {
		run(fmt.Sprintf("mmap/p=%d", p), load(LoadOptions{Parallelism: p, Mmap: true}, false))
	}
	run("verify", load(LoadOptions{}, true))
}

// benchLoadSize is $INFERA_BENCH_LOAD_SIZE: bytes, optionally with a KiB,
// MiB or GiB suffix (the B may be left off); 256 MiB if unset.
func benchLoadSize(b *testing.B) int64 {
	s := os.Getenv("INFERA_BENCH_LOAD_SIZE")
	if s == "" {
		return 256 << 20
	}
	num, shift := strings.TrimSuffix(s, "B"), 0
	for i, unit := range []string{"Ki", "Mi", "Gi"} {
		if rest, ok := strings.CutSuffix(num, unit); ok {
			num, shift = rest, 10*(i+1)
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (64<<30)>>shift {
		b.Fatalf("INFERA_BENCH_LOAD_SIZE %q: want bytes, such as 268435456, 256MiB or 1GiB, up to 64GiB", s)
	}
	return n << shift
}

// BenchmarkInit writes a 64 MiB model, fsync included.
func BenchmarkInit(b *testing.B) {
	const size = 64 << 20
	dir := b.TempDir()
	b.SetBytes(size)
	for b.Loop() {
		if _, err := Init(dir, InitOptions{Size: size, Seed: 1}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkQuickstart is the quickstart's path at its default size: Init,
// Load, then 32 tokens of one prompt. It runs only when
// INFERA_BENCH_QUICKSTART=1, as it writes 256 MiB each iteration.
func BenchmarkQuickstart(b *testing.B) {
	if os.Getenv("INFERA_BENCH_QUICKSTART") != "1" {
		b.Skip("set INFERA_BENCH_QUICKSTART=1 to run (writes 256 MiB)")
	}
	var initT, loadT, genT time.Duration
	for b.Loop() {
		dir := b.TempDir()
		t0 := time.Now()
		if _, err := Init(dir, InitOptions{Size: DefaultSize}); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		m, err := Load(context.Background(), dir, LoadOptions{})
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		seq := m.NewSequence(m.Encode("Tell me about the sea."))
		for range 32 {
			seq.Next()
		}
		t3 := time.Now()
		m.Close()
		initT, loadT, genT = initT+t1.Sub(t0), loadT+t2.Sub(t1), genT+t3.Sub(t2)
	}
	n := float64(b.N)
	b.ReportMetric(initT.Seconds()*1e3/n, "ms/init")
	b.ReportMetric(loadT.Seconds()*1e3/n, "ms/load")
	b.ReportMetric(genT.Seconds()*1e3/n, "ms/32tokens")
}
