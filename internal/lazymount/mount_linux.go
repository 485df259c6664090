package lazymount

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

const (
	devFuse = "/dev/fuse"
	// fusectlMagic is FUSE_CTL_SUPER_MAGIC, the statfs type of the fusectl file system.
	fusectlMagic = 0x65735543
	fusectl      = "/sys/fs/fuse/connections"
	// maxRead is the largest READ the kernel sends (its max_pages default, 256 pages).
	maxRead = 1 << 20
)

// New mounts tree, read-only, on dir (an existing directory) and serves its reads from b
// until Close. Stat and readdir answer at once from tree; a read waits in b.ReadAt for its
// range. New calls mount(2) itself (it needs root; no fusermount) and fails with ErrNoFUSE,
// never hangs, when /dev/fuse or the mount is refused.
func New(dir string, tree []File, b Backing, opts Options) (*Mount, error) {
	tree, err := checkTree(tree)
	if err != nil {
		return nil, err
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, fmt.Errorf("lazymount: mount %s: %w", dir, err)
	}
	var under unix.Stat_t // the directory before mounting
	if err := unix.Stat(dir, &under); err != nil {
		return nil, fmt.Errorf("lazymount: mount: %w", &os.PathError{Op: "stat", Path: dir, Err: err})
	} else if under.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, fmt.Errorf("lazymount: mount %s: not a directory", dir)
	}
	if err := checkDevice(devFuse); err != nil {
		return nil, fmt.Errorf("lazymount: mount %s: %w", dir, err)
	}

	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Mount{
		dir: dir, backing: b, log: log, opts: opts, mounted: time.Now(),
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
	}
	root := &dirNode{mtime: m.mounted}
	nodeFS := fusefs.NewNodeFS(root, &fusefs.Options{
		EntryTimeout:    &opts.EntryTimeout,
		AttrTimeout:     &opts.AttrTimeout,
		NegativeTimeout: &opts.NegativeTimeout,
		OnAdd:           func(ctx context.Context) { m.populate(ctx, root.EmbeddedInode(), tree) },
		Logger:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	})
	name := opts.Name
	if name == "" {
		name = "lazymount"
	}
	mo := &fuse.MountOptions{
		FsName: name,
		Name:   "lazymount",
		// mount(2) ourselves, never fusermount (absent here, and a fallback would hide why).
		DirectMountStrict: true,
		DirectMountFlags:  unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV,
		// The kernel enforces File.Mode (go-fuse would otherwise let anyone read everything).
		Options:             []string{"default_permissions"},
		AllowOther:          opts.AllowOther,
		MaxBackground:       opts.MaxBackground,
		CongestionThreshold: opts.CongestionThreshold,
		MaxWrite:            maxRead, // also max_read: fewer, larger READs
		DisableXAttrs:       true,
		// READ replies are bytes in memory: splicing them costs a copy into a pipe, and a 1 MiB
		// reply plus its header outgrows the default pipe-max-size, so go-fuse would fall back
		// (logging a warning) on every READ.
		DisableSplice: true,
		Logger:        slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	srv, err := fuse.NewServer(nodeFS, dir, mo)
	if err != nil {
		cancel()
		// go-fuse leaves the mount in place when it fails after mount(2), at INIT.
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err == unix.ENOTCONN || err == nil && st.Dev != under.Dev {
			unix.Unmount(dir, unix.MNT_DETACH)
		}
		return nil, fmt.Errorf("lazymount: mount %s: %w: %w", dir, ErrNoFUSE, err)
	}
	go func() {
		defer close(m.done)
		srv.Serve()
	}()
	err = srv.WaitMount()
	var st unix.Stat_t
	if err == nil {
		err = unix.Stat(dir, &st)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("lazymount: mount %s: %w", dir, err), m.Close())
	}
	m.dev = st.Dev
	if opts.MaxReadAhead > 0 {
		// FUSE's INIT can only lower the kernel's 128 KiB; the mount's bdi can raise it too.
		if err := setReadAhead(st.Dev, opts.MaxReadAhead); err != nil {
			log.Warn("lazymount: readahead stays at the kernel's default", "dir", dir, "err", err)
		}
	}
	return m, nil
}

// setReadAhead sets the readahead window of the mount whose st_dev is dev to n bytes.
func setReadAhead(dev uint64, n int) error {
	name := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(dev), unix.Minor(dev))
	return os.WriteFile(name, []byte(strconv.Itoa((n+1023)/1024)), 0)
}

// checkDevice tells why path cannot serve as /dev/fuse, if it cannot.
func checkDevice(path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Errorf("%w: %w", ErrNoFUSE, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 10 || unix.Minor(st.Rdev) != 229 {
		return fmt.Errorf("%w: %s is not the FUSE device (character device 10:229)", ErrNoFUSE, path)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("%w: open %s: %w", ErrNoFUSE, path, err)
	}
	return unix.Close(fd)
}

// detachDir unmounts lazily, keeping a pin on the root: the connection, and so its number in
// fusectl, stays alive until close aborts it (a number freed could name another mount).
func (m *Mount) detachDir() error {
	pin, err := unix.Open(m.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("pin: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(pin, &st); err != nil || st.Dev != m.dev {
		unix.Close(pin)
		return fmt.Errorf("%s is not this mount any more", m.dir)
	}
	if err := unix.Unmount(m.dir, unix.MNT_DETACH); err != nil {
		unix.Close(pin)
		return err
	}
	m.pin = pin
	return nil
}

func (m *Mount) close() error {
	m.cancel()
	if m.isDetached() {
		// Off the tree already; whoever still reads it keeps it alive: end the connection.
		err := abortConnection(m.dev)
		unix.Close(m.pin)
		if err != nil {
			return fmt.Errorf("lazymount: close %s (detached): abort connection: %w", m.dir, err)
		}
		<-m.done
		return nil
	}
	err := unix.Unmount(m.dir, 0)
	if err != nil {
		err = m.detach(err)
	}
	<-m.done
	return err
}

// detach ends a mount that umount(2) refused (cause): normally EBUSY, files still open. It
// detaches the mount from the tree (MNT_DETACH) and aborts the FUSE connection, which ends the
// server and fails the open files with ENOTCONN, so that Close need not wait for their owners.
func (m *Mount) detach(cause error) error {
	// The pin keeps the connection, and so its number, alive from the detach to the abort.
	pin, err := unix.Open(m.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("lazymount: unmount %s: %w (and pin: %w)", m.dir, cause, err)
	}
	defer unix.Close(pin)
	var st unix.Stat_t
	if err := unix.Fstat(pin, &st); err != nil || st.Dev != m.dev {
		// Not our mount any more (someone else unmounted it): the server ends with the
		// connection, when the kernel drops it.
		return fmt.Errorf("lazymount: unmount %s: %w", m.dir, cause)
	}
	var errs []error
	if !errors.Is(cause, unix.EBUSY) {
		errs = append(errs, fmt.Errorf("unmount: %w", cause))
	}
	if err := unix.Unmount(m.dir, unix.MNT_DETACH); err != nil {
		errs = append(errs, fmt.Errorf("lazy unmount: %w", err))
	}
	if err := abortConnection(m.dev); err != nil {
		errs = append(errs, fmt.Errorf("abort connection: %w", err))
	}
	if len(errs) > 0 {
		return fmt.Errorf("lazymount: close %s: %w", m.dir, errors.Join(errs...))
	}
	return fmt.Errorf("lazymount: close %s: %w: detached lazily, its open files fail from now on", m.dir, ErrBusy)
}

// abortConnection aborts the FUSE connection of the mount whose st_dev is dev, through fusectl:
// at /sys/fs/fuse/connections when it is mounted there, else through a private mount of it
// (fusectl has one instance, so any mount of it shows every connection).
func abortConnection(dev uint64) error {
	// fusectl names a connection by the kernel's dev_t of its super block.
	id := strconv.FormatUint(uint64(unix.Major(dev))<<20|uint64(unix.Minor(dev)), 10)
	var sfs unix.Statfs_t
	if err := unix.Statfs(fusectl, &sfs); err == nil && sfs.Type == fusectlMagic {
		return os.WriteFile(filepath.Join(fusectl, id, "abort"), []byte("1"), 0)
	}
	tmp, err := os.MkdirTemp("", "lazymount-fusectl-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp)
	if err := unix.Mount("fusectl", tmp, "fusectl", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount fusectl: %w", err)
	}
	defer unix.Unmount(tmp, unix.MNT_DETACH)
	return os.WriteFile(filepath.Join(tmp, id, "abort"), []byte("1"), 0)
}
