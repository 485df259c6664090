// Package store keeps infera's desired state: every applied object, versioned
// and watchable, in one embedded bbolt file (DefaultDir()/state.db).
//
// # What is stored
//
// An Object is an opaque blob of canonical JSON (Data) under a Key
// (group, kind, namespace, name), plus two counters the store maintains:
//
//   - Revision is store-wide. Every Apply that changes something commits as
//     one bbolt transaction and takes the next revision; every object it
//     created, configured or deleted carries that revision. It plays the part
//     of Kubernetes' resourceVersion and etcd's mod_revision.
//   - Generation is per object: 1 on create, +1 each time Data changes
//     (byte comparison). Re-applying identical Data is a no-op: the action is
//     Unchanged, nothing is written, the revision does not move and no event
//     is emitted. Source is informational and is not compared.
//
// Apply is all-or-nothing: puts and deletes go into a single transaction, and
// any failure (deleting a key that does not exist, an invalid key, a
// cancelled context) rolls the whole set back. bbolt fsyncs on commit, so an
// Apply that returned survives a crash of the process.
//
// # Watching
//
// Each committed Apply appends its events (all with the same revision, in
// the order of the puts and then the deletes) to an in-memory event log that
// starts empty at Open:
//
//	Open(rev=R0)    Apply -> R0+1        Apply -> R0+2
//	 logStart=R0 ──▶ [ev ev ev] ───────▶ [ev] ─────────▶ ... (at most Options.WatchHistory events)
//	                      ▲                 ▲
//	             Watch(R0) replays   a watcher's cursor
//
// Watch(ctx, from) starts a goroutine with a cursor at revision from. It
// copies whatever the log holds past the cursor, sends it, and then waits for
// the next Apply. Apply only appends to the log and wakes the watchers; it
// never sends on a watcher's channel, so a slow or stuck watcher cannot block
// it. The log is bounded: when it holds more than Options.WatchHistory
// events, the oldest revisions are dropped (compacted).
//
// Slow-watcher policy: a watcher whose cursor falls behind the start of the
// log is closed (its channel is closed while its ctx is still live). Watch
// from a revision older than the log start returns ErrCompacted. Since the log
// starts empty at every Open, this includes any revision before the one the
// store opened at. The consumer's loop is therefore:
//
//	objs, rev, err := s.ListWithRevision("", "", "") // resync from a snapshot
//	ch, err := s.Watch(ctx, rev)                     // no gap, no overlap
//	for ev := range ch { rev = ev.Revision; ... }
//	// closed: ctx done, store closed (Watch says ErrClosed),
//	// or fell behind (Watch(ctx, rev) says ErrCompacted: list again)
//
// # Files and failures
//
// Open creates the parent directory (0700) and the file (0600), takes bbolt's
// exclusive flock (ErrLocked after Options.Timeout), and checks the file
// before trusting it: bbolt's page consistency check, the file size against
// the page high-water mark, and a decode of every stored object. Any failure
// there, including a panic or a memory fault inside bbolt, is reported as
// ErrCorrupt with the command that moves the file aside.
//
// Layout: bucket "objects" maps group\x00kind\x00namespace\x00name to a small
// binary header (format, generation, revision, apiVersion, source) followed by
// Data; bucket "meta" holds the revision counter and the schema version.
package store
