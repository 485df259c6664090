//go:build linux

package lazymount_test

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// fakeBacking is a fake lazymount.Backing over in-memory files, read in chunks that become
// available only as the test releases them. It tells the test when a read waits on a chunk.
type fakeBacking struct {
	chunk int64
	files map[string][]byte

	mu     sync.Mutex
	chunks map[chunkKey]*chunkState
	fail   map[string]error

	reads    atomic.Int64 // ReadAt calls
	canceled atomic.Int64 // ReadAt calls that gave up on ctx
}

type chunkKey struct {
	path string
	i    int64
}

type chunkState struct {
	released chan struct{} // closed by release
	waited   chan struct{} // closed when a read first waits on the chunk
	isWaited bool
}

func newFakeBacking(chunk int64, files map[string][]byte) *fakeBacking {
	return &fakeBacking{chunk: chunk, files: files, chunks: map[chunkKey]*chunkState{}, fail: map[string]error{}}
}

func (f *fakeBacking) state(path string, i int64) *chunkState {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := chunkKey{path, i}
	s, ok := f.chunks[k]
	if !ok {
		s = &chunkState{released: make(chan struct{}), waited: make(chan struct{})}
		f.chunks[k] = s
	}
	return s
}

func (f *fakeBacking) ReadAt(ctx context.Context, path string, p []byte, off int64) (int, error) {
	f.reads.Add(1)
	f.mu.Lock()
	err := f.fail[path]
	f.mu.Unlock()
	if err != nil {
		return 0, err
	}
	data, ok := f.files[path]
	if !ok {
		return 0, fmt.Errorf("fakeBacking: no file %q", path)
	}
	if off >= int64(len(data)) {
		return 0, io.EOF
	}
	end := min(off+int64(len(p)), int64(len(data)))
	for i := off / f.chunk; i <= (end-1)/f.chunk; i++ {
		s := f.state(path, i)
		select {
		case <-s.released:
			continue
		default:
		}
		f.mu.Lock()
		if !s.isWaited {
			s.isWaited = true
			close(s.waited)
		}
		f.mu.Unlock()
		select {
		case <-s.released:
		case <-ctx.Done():
			f.canceled.Add(1)
			return 0, ctx.Err()
		}
	}
	n := copy(p, data[off:end])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// release makes chunk i of path available.
func (f *fakeBacking) release(path string, i int64) {
	s := f.state(path, i)
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-s.released:
	default:
		close(s.released)
	}
}

// releaseAll makes all of path available.
func (f *fakeBacking) releaseAll(path string) {
	for i := int64(0); i*f.chunk < int64(len(f.files[path])); i++ {
		f.release(path, i)
	}
}

// waited is closed once a read has waited on chunk i of path.
func (f *fakeBacking) waited(path string, i int64) <-chan struct{} { return f.state(path, i).waited }

// failWith makes every read of path fail with err.
func (f *fakeBacking) failWith(path string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[path] = err
}
