package lazymount

import (
	"context"
	"errors"
	"fmt"
	"io"
	iofs "io/fs"
	"log/slog"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Errors a Mount reports; each is wrapped with the operation and the directory.
var (
	// ErrNoFUSE: /dev/fuse is missing or unusable, or the kernel refused the mount (a direct
	// mount needs root, CAP_SYS_ADMIN; there is no fusermount fallback).
	ErrNoFUSE = errors.New("lazymount: FUSE unavailable")
	// ErrBadTree: the file tree given to New is not a tree of relative, clean paths.
	ErrBadTree = errors.New("lazymount: bad file tree")
	// ErrBusy: Close found files open on the mount; it detached the mount lazily and aborted the
	// connection, so those files now fail with ENOTCONN. The mount is gone all the same.
	ErrBusy = errors.New("lazymount: mount busy")
)

// Backing serves the bytes of the dataset's files. It is the mount's only view of the cache.
type Backing interface {
	// ReadAt fills p with the bytes of the file at path (as in File.Path) from off, blocking
	// until that range is available: served from what is cached, the missing part fetched ahead
	// of the queue. It follows io.ReaderAt: fewer than len(p) bytes come with an error (io.EOF
	// is allowed with a full read). The mount never asks for bytes past File.Size. ReadAt must
	// return soon after ctx is done, which happens when the reader is interrupted or the mount
	// closes. It is called from many goroutines at once.
	ReadAt(ctx context.Context, path string, p []byte, off int64) (int, error)
}

// File is one regular file of the tree; directories are implied by the paths.
type File struct {
	// Path is slash-separated and relative ("llama/model-00001.safetensors").
	Path string
	// Size is the file's final size, from the object store's listing: stat shows it at once.
	Size int64
	// Mode holds the permission bits only; zero means 0444.
	Mode iofs.FileMode
	// ModTime is the file's modification time; zero means the time of mounting.
	ModTime time.Time
}

// A Mount is a read-only FUSE file system serving a fixed tree of files from a Backing.
type Mount struct {
	dir     string
	backing Backing
	log     *slog.Logger
	opts    Options
	mounted time.Time

	// ctx ends when Close begins: reads waiting in the Backing give up and later ones fail.
	ctx    context.Context
	cancel context.CancelFunc

	dev  uint64        // st_dev of the mounted root, for the connection's fusectl entry
	done chan struct{} // closed when the server goroutine has returned

	closeOnce sync.Once
	closeErr  error

	detachMu sync.Mutex
	detached bool // Detach took the mount off dir
	pin      int  // with detached: an O_PATH descriptor of the root, keeping the connection's number
}

// Dir returns the absolute path of the mount point.
func (m *Mount) Dir() string { return m.dir }

// Close ends the mount: reads still waiting on the Backing fail with EIO, the mount point is
// unmounted (lazily, with the connection aborted, when files are still open on it: then the
// error wraps ErrBusy), and Close returns once the server goroutine has exited. Close is
// idempotent and returns the same error every time.
func (m *Mount) Close() error {
	m.closeOnce.Do(func() { m.closeErr = m.close() })
	return m.closeErr
}

// Detach takes the mount off its directory (a lazy unmount) and goes on serving whoever still
// reads it: files open on it, and mount namespaces holding a copy of it (a bubblewrap
// sandbox's --ro-bind of the directory). A lookup of the directory from now on finds what is
// under it. Close ends the mount for them too. Detach is idempotent.
func (m *Mount) Detach() error {
	m.detachMu.Lock()
	defer m.detachMu.Unlock()
	if m.detached {
		return nil
	}
	if err := m.detachDir(); err != nil {
		return fmt.Errorf("lazymount: detach %s: %w", m.dir, err)
	}
	m.detached = true
	return nil
}

func (m *Mount) isDetached() bool {
	m.detachMu.Lock()
	defer m.detachMu.Unlock()
	return m.detached
}

// readAt serves one FUSE READ of p at off in f: it waits for the Backing until the kernel
// interrupts the request (EINTR) or the mount closes (EIO). Any other failure is logged and
// becomes EIO for this read only.
func (m *Mount) readAt(req context.Context, f *File, p []byte, off int64) syscall.Errno {
	if m.ctx.Err() != nil {
		return syscall.EIO
	}
	// go-fuse's request context is not one of the context package's, so joining it to the
	// mount's costs a goroutine per READ (AfterFunc); BenchmarkSequentialRead cannot tell.
	ctx, cancel := context.WithCancel(m.ctx)
	stop := context.AfterFunc(req, cancel)
	n, err := m.backing.ReadAt(ctx, f.Path, p, off)
	stop()
	cancel()
	if n == len(p) {
		return 0
	}
	switch {
	case req.Err() != nil:
		return syscall.EINTR
	case m.ctx.Err() != nil:
		return syscall.EIO
	}
	if err == nil || errors.Is(err, io.EOF) {
		// A short read would make the kernel shrink the file to where it ended.
		err = fmt.Errorf("%d of %d bytes: %w (the listing says %d bytes)", n, len(p), io.ErrUnexpectedEOF, f.Size)
	}
	m.log.Warn("lazymount: read failed", "dir", m.dir, "path", f.Path, "off", off, "len", len(p), "err", err)
	return syscall.EIO
}

// checkTree returns tree with default modes filled in, or every problem with it joined.
func checkTree(tree []File) ([]File, error) {
	out := make([]File, len(tree))
	var errs []error
	bad := func(i int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: tree[%d] %q: %s", ErrBadTree, i, tree[i].Path, fmt.Sprintf(format, args...)))
	}
	files := make(map[string]int, len(tree))
	dirs := map[string]int{}
	for i, f := range tree {
		out[i] = f
		if out[i].Mode == 0 {
			out[i].Mode = 0o444
		}
		p := f.Path
		switch {
		case p == "" || p == ".":
			bad(i, "empty path")
			continue
		case strings.HasPrefix(p, "/"):
			bad(i, "absolute path")
			continue
		case path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../"):
			bad(i, "not a clean relative path (want %q)", path.Clean(p))
			continue
		case strings.ContainsRune(p, 0):
			bad(i, "NUL in path")
			continue
		}
		if f.Size < 0 {
			bad(i, "negative size %d", f.Size)
		}
		if f.Mode&^iofs.ModePerm != 0 {
			bad(i, "mode %v is not permission bits only", f.Mode)
		}
		for elem := range strings.SplitSeq(p, "/") {
			if len(elem) > 255 {
				bad(i, "name %.20q... longer than 255 bytes", elem)
			}
		}
		if j, dup := files[p]; dup {
			bad(i, "listed again (first at tree[%d])", j)
			continue
		}
		files[p] = i
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, seen := dirs[d]; !seen {
				dirs[d] = i
			}
		}
	}
	for i, f := range tree {
		if j, isDir := dirs[f.Path]; isDir && files[f.Path] == i {
			bad(i, "is a file and also the directory of tree[%d] %q", j, tree[j].Path)
		}
	}
	return out, errors.Join(errs...)
}
