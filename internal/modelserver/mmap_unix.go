//go:build linux || darwin || freebsd

package modelserver

import (
	"os"
	"syscall"
)

// mapFile maps size bytes of f read-only and shared, so the weights live in
// the page cache once however many servers map them.
func mapFile(f *os.File, size int) (data []byte, unmap func() error, err error) {
	data, err = syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, err
	}
	return data, func() error { return syscall.Munmap(data) }, nil
}

// allocWeights returns size bytes of anonymous memory for the weights,
// outside the Go heap: the garbage collector neither scans it nor counts it
// toward its next goal, and Close returns it to the system at once. Huge
// pages are asked for where there are any (adviseHugePages).
func allocWeights(size int) (data []byte, free func() error, err error) {
	data, err = syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		return nil, nil, err
	}
	adviseHugePages(data)
	return data, func() error { return syscall.Munmap(data) }, nil
}
