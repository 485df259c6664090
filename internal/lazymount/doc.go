// Package lazymount shows a dataset's file tree, read-only, through FUSE while its files are
// still being fetched, as Fluid's lazy FUSE does: a replica starts, stats and opens its model
// at once, and each read waits only for the bytes it needs.
//
// # The tree
//
// New takes the whole tree up front, from the object store's listing: paths, final sizes,
// modes. Directories are implied by the paths. Lookup, stat, readdir (ls -l) are answered from
// that tree and never touch the Backing, so they show final sizes before any byte is there.
// The tree never changes while mounted.
//
// # A read
//
//	replica read(2) or page fault on an mmap
//	  -> page cache miss -> kernel readahead
//	  -> FUSE READ [off, off+n), n <= 1 MiB, an asynchronous ("background") request
//	  -> a go-fuse server goroutine -> fileNode.Read: clip to File.Size
//	  -> Backing.ReadAt(ctx, path, p, off)   blocks until the range is available
//	  -> reply -> the kernel fills the pages -> the replica's read returns
//
// What waits is the whole READ, and the kernel chooses it: a sequential reader's READs carry
// readahead (Options.MaxReadAhead, 1 MiB by default, raised through the mount's bdi because
// FUSE's INIT can only lower the kernel's 128 KiB), so it may wait for up to that much past
// what it asked for; a random read asks for about what it reads. A read never waits for
// another file, nor for another range of its own file: every READ runs on its own goroutine
// and nothing here holds a lock while reading. Two readers of the same pages share one READ
// (the kernel locks pages under I/O), so a range is asked for once.
//
// The kernel bounds background READs in flight on the mount by Options.MaxBackground (256 by
// default, libfuse's 12 being far too few here): while that many wait on ranges not yet
// fetched, any further buffered read, even of cached bytes, queues in the kernel.
//
// # Errors and interruption
//
// An error from the Backing becomes EIO for that READ only, and is logged. So does a short
// read within File.Size: the kernel would take it to mean the file ends there. Reads past the
// end return short or nothing, as files do; the Backing is never asked for them. A READ the
// kernel interrupts ends its Backing wait and returns EINTR. A buffered reader that is killed
// does not wait at all (it sleeps killably on the page lock), but its READ stays with the
// Backing until the range arrives or the mount closes.
//
// # What the kernel caches
//
// Attributes and name lookups for Options.AttrTimeout and Options.EntryTimeout (negative
// lookups for NegativeTimeout). File data stays in the page cache while a file is open; with
// Options.KernelCache (-okernel_cache) it also survives close and reopen, which is always
// correct here because files never change. Without it, every open drops the file's pages, as
// libfuse does. Once read, bytes are served by the kernel without asking this package, even
// while other ranges of the same file are still being fetched.
//
// # Mounting and unmounting
//
// New calls mount(2) itself (go-fuse's DirectMountStrict: root, no fusermount fallback) with
// MS_RDONLY, nosuid, nodev and default_permissions, so the kernel refuses every write, create,
// unlink and setattr with EROFS and enforces File.Mode; the nodes answer EROFS as well. It
// checks /dev/fuse first, and fails with ErrNoFUSE rather than hanging when the device or the
// mount is refused.
//
//	serving --Close--> reads fail (Backing waits end, later reads get EIO)
//	        --umount(2)--> ok: the kernel ends the connection
//	                   \-> EBUSY (files open): pin the root, umount(MNT_DETACH): the directory
//	                       is empty at once; abort the connection through fusectl, so the
//	                       open files fail with ENOTCONN; Close reports ErrBusy
//	        --> the server goroutine sees ENODEV and returns --> Close returns
//
// Detach takes the mount off its directory (umount(MNT_DETACH), with the root pinned) and keeps
// serving whoever still holds it: open files and mount namespaces with a copy (a bubblewrap
// sandbox's bind of the directory). A later Close aborts the connection through fusectl and
// unpins the root, so those fail with ENOTCONN.
//
// Close thus does not wait for the owners of open files, which may be replicas that keep a
// model mapped (unless the abort itself fails, which Close reports: then the server lives until
// they close). It does wait for Backing.ReadAt calls to return after their ctx is done. A process that serves a mount must not itself read it in a way it cannot abandon:
// should it die with reads pending on its own mount, it cannot exit until the connection is
// aborted (the tests close the mount before the files they opened on it for this reason).
package lazymount
