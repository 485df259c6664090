//go:build linux

package lazymount_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/lazymount"
)

// fileBacking serves every range from one file, as the cache's Backing does once a file is
// fully fetched: a pread of the cache file.
type fileBacking struct{ f *os.File }

func (b fileBacking) ReadAt(_ context.Context, _ string, p []byte, off int64) (int, error) {
	return b.f.ReadAt(p, off)
}

// BenchmarkSequentialRead reads a 256 MiB file sequentially in 4 MiB reads, by 1 or 4 readers
// (each its own open, as replicas are), once straight from a file in the page cache and once
// through the mount backed by that same file, and reports both rates and their ratio. With
// kernel_cache off every byte passes through the FUSE server on every pass (the cold load of a
// replica); with it on, the mount is warmed first and its own page cache serves the passes
// (a second replica of a loaded model).
func BenchmarkSequentialRead(b *testing.B) {
	const size, block = 256 << 20, 4 << 20
	plain := filepath.Join(b.TempDir(), "plain")
	if err := os.WriteFile(plain, pattern(1, size), 0o644); err != nil {
		b.Fatal(err)
	}
	if _, err := readAll(plain, 1, block); err != nil { // into the page cache
		b.Fatal(err)
	}
	src, err := os.Open(plain)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()

	for _, readers := range []int{1, 4} {
		for _, kernelCache := range []bool{false, true} {
			name := fmt.Sprintf("readers=%d/kernel_cache=%v", readers, kernelCache)
			b.Run(name, func(b *testing.B) {
				opts := lazymount.DefaultOptions()
				opts.KernelCache = kernelCache
				m, err := lazymount.New(b.TempDir(), []lazymount.File{{Path: "model", Size: size}}, fileBacking{src}, opts)
				if err != nil {
					b.Fatal(err)
				}
				defer func() {
					if err := m.Close(); err != nil {
						b.Error(err)
					}
				}()
				mounted := filepath.Join(m.Dir(), "model")
				if kernelCache { // measure the warm mount: its page cache holds the file
					if _, err := readAll(mounted, 1, block); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				var plainTime, mountTime time.Duration
				passes := 0
				for b.Loop() {
					d, err := readAll(plain, readers, block)
					if err != nil {
						b.Fatal(err)
					}
					plainTime += d
					if d, err = readAll(mounted, readers, block); err != nil {
						b.Fatal(err)
					}
					mountTime += d
					passes++
				}
				total := float64(passes*readers*size) / 1e6
				plainRate, mountRate := total/plainTime.Seconds(), total/mountTime.Seconds()
				b.ReportMetric(plainRate, "plain-MB/s")
				b.ReportMetric(mountRate, "mount-MB/s")
				b.ReportMetric(mountRate/plainRate, "mount/plain")
			})
		}
	}
}

// readAll has readers goroutines each open name and read it from start to end in block-sized
// reads, and returns how long they took together.
func readAll(name string, readers, block int) (time.Duration, error) {
	start := time.Now()
	errs := make([]error, readers)
	var wg sync.WaitGroup
	for r := range readers {
		wg.Go(func() {
			f, err := os.Open(name)
			if err != nil {
				errs[r] = err
				return
			}
			defer f.Close()
			buf := make([]byte, block)
			for off := int64(0); ; off += int64(block) {
				n, err := f.ReadAt(buf, off)
				if err == io.EOF && n > 0 {
					continue
				}
				if err == io.EOF {
					return
				}
				if err != nil {
					errs[r] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}
