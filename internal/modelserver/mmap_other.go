//go:build !(linux || darwin || freebsd)

package modelserver

import (
	"io"
	"os"
)

// mapFile reads f into memory where mmap is not available to syscall.
func mapFile(f *os.File, size int) (data []byte, unmap func() error, err error) {
	data = make([]byte, size)
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, nil, err
	}
	return data, func() error { return nil }, nil
}

// allocWeights returns memory for the weights from the Go heap.
func allocWeights(size int) (data []byte, free func() error, err error) {
	return make([]byte, size), func() error { return nil }, nil
}
