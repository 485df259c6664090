package lazymount

import (
	"context"
	"path"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// The tree is built once, as persistent inodes, when the root is attached; go-fuse's Inode
// answers lookups and readdir from those children. Nodes hold no locks: everything they read
// is fixed at mount time.

// dirNode is a directory implied by the files' paths.
type dirNode struct {
	fusefs.Inode
	readOnly
	mtime time.Time
}

var _ fusefs.NodeGetattrer = (*dirNode)(nil)

func (n *dirNode) Getattr(_ context.Context, _ fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = 0o555
	out.Nlink = 2
	setTimes(&out.Attr, n.mtime)
	return 0
}

// fileNode is one File; its reads go to the Backing.
type fileNode struct {
	fusefs.Inode
	readOnly
	m    *Mount
	file File
}

var (
	_ fusefs.NodeGetattrer = (*fileNode)(nil)
	_ fusefs.NodeOpener    = (*fileNode)(nil)
	_ fusefs.NodeReader    = (*fileNode)(nil)
)

func (n *fileNode) Getattr(_ context.Context, _ fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = uint32(n.file.Mode.Perm())
	out.Nlink = 1
	out.Size = uint64(n.file.Size)
	out.Blocks = (out.Size + 511) / 512
	out.Blksize = 1 << 20 // a hint to readers such as cp: large reads cost fewer requests
	setTimes(&out.Attr, n.file.ModTime)
	return 0
}

// Open hands out no file handle (reads go to the node) and keeps the kernel's page cache
// across opens when the mount was asked to (kernel_cache).
func (n *fileNode) Open(_ context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&(syscall.O_TRUNC|syscall.O_APPEND|syscall.O_CREAT) != 0 {
		return nil, 0, syscall.EROFS
	}
	var fuseFlags uint32
	if n.m.opts.KernelCache {
		fuseFlags |= fuse.FOPEN_KEEP_CACHE
	}
	return nil, fuseFlags, 0
}

func (n *fileNode) Read(ctx context.Context, _ fusefs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= n.file.Size || len(dest) == 0 {
		return fuse.ReadResultData(nil), 0
	}
	p := dest[:min(int64(len(dest)), n.file.Size-off)]
	if errno := n.m.readAt(ctx, &n.file, p, off); errno != 0 {
		return nil, errno
	}
	return fuse.ReadResultData(p), 0
}

func setTimes(a *fuse.Attr, t time.Time) {
	a.SetTimes(&t, &t, &t)
}

// readOnly answers every request that would change the tree or a file with EROFS. The kernel
// already refuses them on a read-only mount; this holds should the mount be remounted rw.
type readOnly struct{}

var (
	_ fusefs.NodeSetattrer      = readOnly{}
	_ fusefs.NodeWriter         = readOnly{}
	_ fusefs.NodeCreater        = readOnly{}
	_ fusefs.NodeMkdirer        = readOnly{}
	_ fusefs.NodeMknoder        = readOnly{}
	_ fusefs.NodeLinker         = readOnly{}
	_ fusefs.NodeSymlinker      = readOnly{}
	_ fusefs.NodeUnlinker       = readOnly{}
	_ fusefs.NodeRmdirer        = readOnly{}
	_ fusefs.NodeRenamer        = readOnly{}
	_ fusefs.NodeSetxattrer     = readOnly{}
	_ fusefs.NodeRemovexattrer  = readOnly{}
	_ fusefs.NodeAllocater      = readOnly{}
	_ fusefs.NodeCopyFileRanger = readOnly{}
)

func (readOnly) Setattr(context.Context, fusefs.FileHandle, *fuse.SetAttrIn, *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

func (readOnly) Write(context.Context, fusefs.FileHandle, []byte, int64) (uint32, syscall.Errno) {
	return 0, syscall.EROFS
}

func (readOnly) Create(context.Context, string, uint32, uint32, *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EROFS
}

func (readOnly) Mkdir(context.Context, string, uint32, *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (readOnly) Mknod(context.Context, string, uint32, uint32, *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (readOnly) Link(context.Context, fusefs.InodeEmbedder, string, *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (readOnly) Symlink(context.Context, string, string, *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, syscall.EROFS
}

func (readOnly) Unlink(context.Context, string) syscall.Errno { return syscall.EROFS }
func (readOnly) Rmdir(context.Context, string) syscall.Errno  { return syscall.EROFS }

func (readOnly) Rename(context.Context, string, fusefs.InodeEmbedder, string, uint32) syscall.Errno {
	return syscall.EROFS
}

func (readOnly) Setxattr(context.Context, string, []byte, uint32) syscall.Errno { return syscall.EROFS }
func (readOnly) Removexattr(context.Context, string) syscall.Errno              { return syscall.EROFS }

func (readOnly) Allocate(context.Context, fusefs.FileHandle, uint64, uint64, uint32) syscall.Errno {
	return syscall.EROFS
}

func (readOnly) CopyFileRange(context.Context, fusefs.FileHandle, uint64, *fusefs.Inode, fusefs.FileHandle, uint64, uint64, uint64) (uint32, syscall.Errno) {
	return 0, syscall.EROFS
}

// populate adds tree under root: the directories its paths imply, then its files. Inode
// numbers follow the order of creation, so a tree always mounts with the same numbers.
func (m *Mount) populate(ctx context.Context, root *fusefs.Inode, tree []File) {
	ino := uint64(1) // the root's
	dirs := map[string]*fusefs.Inode{".": root}
	var dir func(p string) *fusefs.Inode
	dir = func(p string) *fusefs.Inode {
		if d, ok := dirs[p]; ok {
			return d
		}
		parent := dir(path.Dir(p))
		ino++
		d := parent.NewPersistentInode(ctx, &dirNode{mtime: m.mounted}, fusefs.StableAttr{Mode: syscall.S_IFDIR, Ino: ino})
		parent.AddChild(path.Base(p), d, false)
		dirs[p] = d
		return d
	}
	for _, f := range tree {
		parent := dir(path.Dir(f.Path))
		if f.ModTime.IsZero() {
			f.ModTime = m.mounted
		}
		ino++
		n := parent.NewPersistentInode(ctx, &fileNode{m: m, file: f}, fusefs.StableAttr{Mode: syscall.S_IFREG, Ino: ino})
		parent.AddChild(path.Base(f.Path), n, false)
	}
}
