package modelserver

import (
	"os"
	"strconv"
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
			m, err := Load(newModelDir(b, size))
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

// BenchmarkLoad loads a model whose file is in the page cache (a cache-hit
// start): mapping, header and layout checks, and reading every weight.
// BenchmarkLoad/verify adds the sha256 of the whole file.
func BenchmarkLoad(b *testing.B) {
	const size = 64 << 20
	dir := newModelDir(b, size)
	for _, verify := range []bool{false, true} {
		name := "64MiB"
		if verify {
			name += "/verify"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				m, err := Load(dir)
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
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/load")
		})
	}
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
		m, err := Load(dir)
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
