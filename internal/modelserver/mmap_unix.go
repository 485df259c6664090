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
