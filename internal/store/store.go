package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Sentinel errors. Every error the store returns for one of these failures
// wraps the sentinel (test with errors.Is) and says what happened to which
// key or file.
var (
	// ErrNotFound: Get of a key that is not stored, or a delete of one in
	// Apply (which then applies nothing).
	ErrNotFound = errors.New("not found")
	// ErrLocked: Open could not take the file's lock within Options.Timeout
	// because another process (another infera) holds it.
	ErrLocked = errors.New("locked by another process")
	// ErrCorrupt: Open found a file that is not a readable infera state file
	// (bad magic or checksums, truncated, inconsistent pages, undecodable
	// records, or a schema this build does not know).
	ErrCorrupt = errors.New("corrupt state file")
	// ErrCompacted: Watch from a revision whose events are no longer in the
	// in-memory event log. List again and watch from the list's revision.
	ErrCompacted = errors.New("revision compacted")
	// ErrClosed: the Store was closed.
	ErrClosed = errors.New("store closed")
)

// FileName is the name of the state file inside the state directory.
const FileName = "state.db"

// DefaultDir returns the default state directory: $XDG_STATE_HOME/infera,
// else ~/.local/state/infera. (XDG ignores a relative XDG_STATE_HOME; so do
// we.) With no home directory at all it falls back to a per-user directory
// under os.TempDir().
func DefaultDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "infera")
	}
	if home, err := os.UserHomeDir(); err == nil && home != "" {
		return filepath.Join(home, ".local", "state", "infera")
	}
	return filepath.Join(os.TempDir(), "infera-"+strconv.Itoa(os.Getuid()), "state")
}

// Options configures Open. The zero value is usable.
type Options struct {
	// Timeout bounds the wait for the file lock; 0 means 1s.
	Timeout time.Duration
	// Logger receives debug records and a warning when a watcher is
	// dropped for falling behind; nil discards.
	Logger *slog.Logger
	// WatchHistory is how many events the in-memory log keeps for Watch
	// replay; 0 means DefaultWatchHistory. It is a soft bound: the newest
	// Apply is always kept whole.
	WatchHistory int
}

// DefaultWatchHistory is the event log's default length.
const DefaultWatchHistory = 4096

// Object is one stored object: opaque canonical JSON plus the counters the
// store maintains. Objects returned by the store own their Data, except in
// Events, where all watchers share one copy: treat it as read-only.
type Object struct {
	Key        Key
	APIVersion string
	// Generation is 1 on create and +1 whenever Data changes; a no-op apply
	// leaves it alone. Ignored on input.
	Generation int64
	// Revision is the store revision of the Apply that last changed the
	// object. Ignored on input.
	Revision uint64
	// Data is the canonical JSON of the whole object, opaque to the store.
	Data []byte
	// Source says where the object came from, e.g. "examples/x.yaml:3".
	// Informational: it is stored with each change of Data and not compared.
	Source string
}

// Action is what an Apply did to one key.
type Action int

// Actions, named as kubectl prints them.
const (
	Created Action = iota + 1
	Configured
	Unchanged
	Deleted
)

func (a Action) String() string {
	switch a {
	case Created:
		return "created"
	case Configured:
		return "configured"
	case Unchanged:
		return "unchanged"
	case Deleted:
		return "deleted"
	}
	return "Action(" + strconv.Itoa(int(a)) + ")"
}

// Change reports the outcome of an Apply for one key. Generation is the
// object's generation after the Apply (for Deleted, its last one).
type Change struct {
	Key        Key
	Action     Action
	Generation int64
}

// Store is the embedded state store. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	path string
	log  *slog.Logger

	// writeMu serializes Apply from transaction to publication, so events
	// reach the log in revision order. Close takes it to wait for an
	// in-flight Apply.
	writeMu sync.Mutex
	closed  atomic.Bool
	done    chan struct{} // closed by Close; watchers exit on it
	wg      sync.WaitGroup

	mu       sync.Mutex // guards the fields below
	rev      uint64     // last committed revision
	events   []Event    // every event with Revision > logStart, in order
	logStart uint64
	history  int
	notify   chan struct{} // closed and replaced at each publication
	watchers int           // live watcher goroutines (for tests)
}

var (
	objectsBucket = []byte("objects")
	metaBucket    = []byte("meta")
	revisionKey   = []byte("revision")
	schemaKey     = []byte("schema")
)

// schemaVersion is the layout version in meta/schema; bump it (and migrate)
// when the layout of keys or values changes.
const schemaVersion = 1

// Open opens, or creates, the state file at path. See the package comment
// for the checks it runs and the errors it returns.
func Open(path string, opts Options) (*Store, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = time.Second
	}
	if opts.WatchHistory <= 0 {
		opts.WatchHistory = DefaultWatchHistory
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db, err := openBolt(path, opts.Timeout)
	if err != nil {
		return nil, err
	}
	rev, err := prepare(db, path)
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	lg.Debug("store opened", "path", path, "revision", rev)
	return &Store{
		db:       db,
		path:     path,
		log:      lg,
		done:     make(chan struct{}),
		rev:      rev,
		logStart: rev,
		history:  opts.WatchHistory,
		notify:   make(chan struct{}),
	}, nil
}

// fileError is an error about the state file whose message is one line
// telling the operator what to do, while errors.Is still finds the
// sentinel and the cause.
type fileError struct {
	msg      string
	sentinel error
	cause    error
}

func (e *fileError) Error() string   { return e.msg }
func (e *fileError) Unwrap() []error { return []error{e.sentinel, e.cause} }

func lockedError(path string, cause error) error {
	return &fileError{
		msg:      fmt.Sprintf("store: %s is locked by another infera process (stop it, or pass --state-dir to use another directory)", path),
		sentinel: ErrLocked,
		cause:    cause,
	}
}

func corruptError(path string, cause error) error {
	return &fileError{
		msg:      fmt.Sprintf("store: %s is corrupt (%v): move it aside to start empty: mv %s %s.corrupt", path, cause, path, path),
		sentinel: ErrCorrupt,
		cause:    cause,
	}
}

// openBolt opens the bbolt file and sorts its failures into locked, corrupt,
// and plain I/O errors (*fs.PathError or errno: permissions, a directory in
// the way); anything else bbolt says about the file's contents is corrupt.
//
// bbolt may panic, or fault on a page of the mapping beyond the end of a
// truncated file, while it reads the meta and freelist pages; both are
// recovered here. bbolt's mapping of the file cannot be reached on that path
// and leaks; it keeps the open file alive, so the lock is released
// explicitly before the file is closed.
func openBolt(path string, timeout time.Duration) (db *bolt.DB, err error) {
	var file *os.File
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if file != nil {
				unlock(file)
				_ = file.Close()
			}
			db, err = nil, corruptError(path, panicError(r))
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{
		Timeout: timeout,
		OpenFile: func(name string, flag int, perm os.FileMode) (*os.File, error) {
			f, err := os.OpenFile(name, flag, perm)
			file = f
			return f, err
		},
	})
	var pathErr *fs.PathError
	var errno syscall.Errno
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, berrors.ErrTimeout):
		return nil, lockedError(path, err)
	case errors.As(err, &pathErr), errors.As(err, &errno):
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	default:
		return nil, corruptError(path, err)
	}
}

// panicError describes a panic recovered from bbolt. A memory fault (with
// debug.SetPanicOnFault) means a read past the end of the mapped file.
func panicError(r any) error {
	if _, fault := r.(interface{ Addr() uintptr }); fault {
		return errors.New("truncated: bbolt read past the end of the file")
	}
	return fmt.Errorf("bbolt: %v", r)
}

// prepare checks an opened file and initializes a new one; it returns the
// stored revision.
func prepare(db *bolt.DB, path string) (rev uint64, err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			rev, err = 0, corruptError(path, panicError(r))
		}
	}()
	fresh := false
	err = db.View(func(tx *bolt.Tx) error {
		if err := checkSize(tx, path); err != nil {
			return err
		}
		// Walk our buckets here first, where a fault on a wild page
		// pointer is recovered; bbolt's Check then reads the same pages
		// on a goroutine of its own, where it would not be.
		var err error
		if rev, fresh, err = checkContents(tx); err != nil {
			return err
		}
		return checkPages(tx, path)
	})
	var fe *fileError
	switch {
	case errors.As(err, &fe):
		return 0, err
	case err != nil:
		return 0, corruptError(path, err)
	case !fresh:
		return rev, nil
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucket(objectsBucket); err != nil {
			return err
		}
		meta, err := tx.CreateBucket(metaBucket)
		if err != nil {
			return err
		}
		if err := meta.Put(schemaKey, binary.BigEndian.AppendUint64(nil, schemaVersion)); err != nil {
			return err
		}
		return meta.Put(revisionKey, binary.BigEndian.AppendUint64(nil, 0))
	})
	if err != nil {
		return 0, fmt.Errorf("store: initialize %s: %w", path, err)
	}
	return 0, nil
}

// checkSize compares the file with its page high-water mark: pages past the
// end of a truncated file would fault when read.
func checkSize(tx *bolt.Tx, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("store: open %s: %w", path, err)
	}
	if tx.Size() > fi.Size() {
		return corruptError(path, fmt.Errorf("truncated: the file is %d bytes, its pages need %d", fi.Size(), tx.Size()))
	}
	return nil
}

// checkPages runs bbolt's consistency check: every page reachable or free,
// exactly once, and the keys of every page in order.
func checkPages(tx *bolt.Tx, path string) error {
	var errs []error
	for err := range tx.Check() { // drain: Check's goroutine exits when done
		if len(errs) < 3 {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return corruptError(path, errors.Join(errs...))
	}
	return nil
}

// checkContents validates the layout and decodes every object. fresh reports
// a file with no buckets at all (new, or zero-length before Open).
func checkContents(tx *bolt.Tx) (rev uint64, fresh bool, err error) {
	meta, objects := tx.Bucket(metaBucket), tx.Bucket(objectsBucket)
	if meta == nil {
		empty := true
		_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
		if empty {
			return 0, true, nil
		}
		return 0, false, errors.New(`not an infera state file: no "meta" bucket`)
	}
	schema := meta.Get(schemaKey)
	if len(schema) != 8 {
		return 0, false, errors.New("no schema version")
	}
	if v := binary.BigEndian.Uint64(schema); v != schemaVersion {
		return 0, false, fmt.Errorf("schema version %d, this build reads %d (written by another infera version?)", v, schemaVersion)
	}
	rev, err = readRevision(meta)
	if err != nil {
		return 0, false, err
	}
	if objects == nil {
		return 0, false, errors.New(`no "objects" bucket`)
	}
	err = objects.ForEach(func(k, v []byte) error {
		key, err := decodeKey(k)
		if err != nil {
			return err
		}
		o, err := decodeValue(key, v)
		if err != nil {
			return err
		}
		if o.Revision > rev {
			return fmt.Errorf("%s: revision %d is past the store's %d", key, o.Revision, rev)
		}
		return nil
	})
	return rev, false, err
}

func readRevision(meta *bolt.Bucket) (uint64, error) {
	v := meta.Get(revisionKey)
	if len(v) != 8 {
		return 0, errors.New("no revision counter")
	}
	return binary.BigEndian.Uint64(v), nil
}

// Close waits for an in-flight Apply, closes every watch channel, waits for
// the watchers' goroutines to exit, and closes the file. Later calls return
// nil; every other method then returns ErrClosed.
func (s *Store) Close() error {
	s.writeMu.Lock()
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		s.writeMu.Unlock()
		return nil
	}
	s.closed.Store(true)
	close(s.done)
	s.mu.Unlock()
	s.writeMu.Unlock()
	s.wg.Wait()
	if err := s.db.Close(); err != nil { // waits for read transactions
		return fmt.Errorf("store: close %s: %w", s.path, err)
	}
	return nil
}

// Revision returns the revision of the last committed change (0 for a new
// store).
func (s *Store) Revision() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rev
}

// Apply stores puts and removes deletes in one transaction: either all of it
// takes effect under one new revision, or none of it does. Deleting a key
// that is not stored fails with ErrNotFound. A key may appear only once
// across puts and deletes. Changes come back in the order of puts, then
// deletes. When every put is Unchanged and there are no deletes, nothing is
// written, no event is emitted and the current revision is returned.
func (s *Store) Apply(ctx context.Context, puts []Object, deletes []Key) ([]Change, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("store: apply: %w", err)
	}
	if err := checkApply(puts, deletes); err != nil {
		return nil, 0, err
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.closed.Load() {
		return nil, 0, fmt.Errorf("store: apply: %w", ErrClosed)
	}
	tx, err := s.db.Begin(true)
	if err != nil {
		return nil, 0, s.txError("apply", err)
	}
	defer func() { _ = tx.Rollback() }() // no-op after Commit
	changes, events, rev, err := apply(tx, puts, deletes)
	if err != nil {
		return nil, 0, err
	}
	if len(events) == 0 {
		return changes, rev, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, fmt.Errorf("store: apply: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, 0, fmt.Errorf("store: apply: commit %s: %w", s.path, err)
	}
	s.publish(rev, events)
	s.log.Debug("store applied", "revision", rev, "events", len(events))
	return changes, rev, nil
}

func checkApply(puts []Object, deletes []Key) error {
	seen := make(map[Key]struct{}, len(puts)+len(deletes))
	check := func(k Key) error {
		if err := k.validate(); err != nil {
			return fmt.Errorf("store: apply: invalid key %q: %v", k, err)
		}
		if _, dup := seen[k]; dup {
			return fmt.Errorf("store: apply: %s appears more than once", k)
		}
		seen[k] = struct{}{}
		return nil
	}
	for i := range puts {
		if err := check(puts[i].Key); err != nil {
			return err
		}
	}
	for _, k := range deletes {
		if err := check(k); err != nil {
			return err
		}
	}
	return nil
}

// apply does the writes of Apply inside tx and returns the revision the
// changes will commit under (the current one if there are no events).
func apply(tx *bolt.Tx, puts []Object, deletes []Key) ([]Change, []Event, uint64, error) {
	meta, objects := tx.Bucket(metaBucket), tx.Bucket(objectsBucket)
	cur, err := readRevision(meta)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("store: apply: %w: %v", ErrCorrupt, err)
	}
	next := cur + 1
	changes := make([]Change, 0, len(puts)+len(deletes))
	var events []Event
	for i := range puts {
		p := &puts[i]
		bk := encodeKey(p.Key)
		obj := Object{
			Key:        p.Key,
			APIVersion: p.APIVersion,
			Generation: 1,
			Revision:   next,
			Data:       bytes.Clone(p.Data),
			Source:     p.Source,
		}
		if obj.Data == nil {
			obj.Data = []byte{}
		}
		typ, action := EventAdded, Created
		if v := objects.Get(bk); v != nil {
			old, err := decodeValue(p.Key, v)
			if err != nil {
				return nil, nil, 0, fmt.Errorf("store: apply: %w: %v", ErrCorrupt, err)
			}
			if old.APIVersion == p.APIVersion && bytes.Equal(old.Data, p.Data) {
				changes = append(changes, Change{Key: p.Key, Action: Unchanged, Generation: old.Generation})
				continue
			}
			typ, action, obj.Generation = EventModified, Configured, old.Generation+1
		}
		if err := objects.Put(bk, encodeValue(&obj)); err != nil {
			return nil, nil, 0, fmt.Errorf("store: apply: put %s: %w", p.Key, err)
		}
		changes = append(changes, Change{Key: p.Key, Action: action, Generation: obj.Generation})
		events = append(events, Event{Type: typ, Object: obj, Revision: next})
	}
	for _, k := range deletes {
		bk := encodeKey(k)
		v := objects.Get(bk)
		if v == nil {
			return nil, nil, 0, fmt.Errorf("store: apply: delete %s: %w", k, ErrNotFound)
		}
		old, err := decodeValue(k, v)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("store: apply: %w: %v", ErrCorrupt, err)
		}
		if err := objects.Delete(bk); err != nil {
			return nil, nil, 0, fmt.Errorf("store: apply: delete %s: %w", k, err)
		}
		changes = append(changes, Change{Key: k, Action: Deleted, Generation: old.Generation})
		events = append(events, Event{Type: EventDeleted, Object: old, Revision: next})
	}
	if len(events) == 0 {
		return changes, nil, cur, nil
	}
	if err := meta.Put(revisionKey, binary.BigEndian.AppendUint64(nil, next)); err != nil {
		return nil, nil, 0, fmt.Errorf("store: apply: %w", err)
	}
	return changes, events, next, nil
}

// Get returns the stored object for k, or an error wrapping ErrNotFound.
func (s *Store) Get(k Key) (Object, error) {
	var o Object
	err := s.view("get", func(tx *bolt.Tx) error {
		v := tx.Bucket(objectsBucket).Get(encodeKey(k))
		if v == nil {
			return fmt.Errorf("store: get %s: %w", k, ErrNotFound)
		}
		var err error
		o, err = decodeValue(k, v)
		if err != nil {
			return fmt.Errorf("store: get: %w: %v", ErrCorrupt, err)
		}
		return nil
	})
	return o, err
}

// List returns the stored objects matching the filter, sorted by key
// (Group, Kind, Namespace, Name). An empty argument matches anything, so
// the core group cannot be selected on its own: filter by Kind instead.
func (s *Store) List(group, kind, namespace string) ([]Object, error) {
	objs, _, err := s.ListWithRevision(group, kind, namespace)
	return objs, err
}

// ListWithRevision is List plus the revision the result reflects, read in
// the same transaction. Watch from that revision delivers every later change
// exactly once: the race-free way to start (or restart) following the store.
func (s *Store) ListWithRevision(group, kind, namespace string) ([]Object, uint64, error) {
	var (
		objs []Object
		rev  uint64
	)
	var prefix []byte
	if group != "" {
		prefix = append([]byte(group), 0)
		if kind != "" {
			prefix = append(append(prefix, kind...), 0)
		}
	}
	err := s.view("list", func(tx *bolt.Tx) error {
		var err error
		if rev, err = readRevision(tx.Bucket(metaBucket)); err != nil {
			return fmt.Errorf("store: list: %w: %v", ErrCorrupt, err)
		}
		c := tx.Bucket(objectsBucket).Cursor()
		for bk, v := c.Seek(prefix); bk != nil && bytes.HasPrefix(bk, prefix); bk, v = c.Next() {
			k, err := decodeKey(bk)
			if err != nil {
				return fmt.Errorf("store: list: %w: %v", ErrCorrupt, err)
			}
			if (group != "" && k.Group != group) || (kind != "" && k.Kind != kind) ||
				(namespace != "" && k.Namespace != namespace) {
				continue
			}
			o, err := decodeValue(k, v)
			if err != nil {
				return fmt.Errorf("store: list: %w: %v", ErrCorrupt, err)
			}
			objs = append(objs, o)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return objs, rev, nil
}

func (s *Store) view(op string, fn func(*bolt.Tx) error) error {
	if s.closed.Load() {
		return fmt.Errorf("store: %s: %w", op, ErrClosed)
	}
	tx, err := s.db.Begin(false)
	if err != nil {
		return s.txError(op, err)
	}
	defer func() { _ = tx.Rollback() }()
	return fn(tx)
}

func (s *Store) txError(op string, err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("store: %s: %w", op, ErrClosed)
	}
	return fmt.Errorf("store: %s: %w", op, err)
}
