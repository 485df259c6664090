package modelcache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/infera-dev/infera/internal/atomicfile"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/infera-dev/infera/internal/clock"
	"github.com/infera-dev/infera/internal/eviction"
	"github.com/infera-dev/infera/internal/fluid"
)

// ObjectFetcher fetches one object of a source into dst, which it writes atomically once the
// data is verified, resuming what an earlier attempt left; progress gets the bytes as they
// arrive. The package's Fetcher is one.
type ObjectFetcher interface {
	Fetch(ctx context.Context, src Source, obj Object, dst string, progress func(delta int64)) error
}

// DatasetSpec is one dataset the cache should hold.
type DatasetSpec struct {
	Namespace string
	Name      string
	Dataset   *fluid.Dataset
	// Runtime is the dataset's runtime (Fluid binds a runtime of the dataset's name), or nil:
	// the default store.
	Runtime *RuntimeSpec
	// Secrets are the values of the dataset's encryptOptions (sharedEncryptOptions and every
	// mount's), resolved from their Secrets, by option name.
	Secrets map[string]string
}

// RuntimeSpec is what the cache uses of a JindoRuntime, AlluxioRuntime or JuiceFSRuntime.
type RuntimeSpec struct {
	Kind        string // fluid.KindJindoRuntime, ...
	Name        string
	TieredStore fluid.TieredStore
	// CleanPolicy is the runtime's fuse.cleanPolicy; "" is Fluid's default, OnRuntimeDeleted.
	CleanPolicy fluid.FuseCleanPolicy
	// FuseArgs are the runtime's fuse.args; the lazy mount honours those that mean something
	// here (lazymount.ParseFuseArgs).
	FuseArgs []string
}

// Config is every dependency of a Manager.
type Config struct {
	// Root is the cache's own directory: the index lives there, and the default store's level.
	Root   string
	Clock  clock.Clock  // nil: clock.Real
	Logger *slog.Logger // nil: discard
	// NewSource opens a mount with its options (sharedOptions overlaid with the mount's own)
	// and its resolved encryptOptions; the package's NewSource is one. A Source that is a Local
	// (a local or NAS directory) is served in place.
	NewSource func(m fluid.Mount, options, secrets map[string]string) (Source, error)
	Fetcher   ObjectFetcher
	// OnChange is called, never with a lock held, when a dataset's phase or message changes.
	OnChange func(namespace, name string)
	// DiskSpace reports the free bytes (for an unprivileged user) and the size of the
	// filesystem holding path; nil: statfs(2). It sizes the default store.
	DiskSpace func(path string) (free, total int64, err error)
	// FetchConcurrency is how many files of one dataset are fetched at once; 0: 4.
	FetchConcurrency int
	// RetryBase and RetryMax bound the back-off between attempts after a failure: RetryBase
	// doubling per attempt up to RetryMax; 0: 1s and 5m.
	RetryBase time.Duration
	RetryMax  time.Duration
	// WatchInterval is how often an OnEvent DataLoad's dataset is listed again to see whether
	// its source changed; 0: one minute.
	WatchInterval time.Duration
	// NoLazy turns lazy mounts off: LazyPath is Path. Otherwise they are on when the Fetcher
	// hands out its transfers (the package's Fetcher does) and a test mount works (lazy.go).
	NoLazy bool
}

func (c *Config) setDefaults() {
	c.Clock = clock.Or(c.Clock)
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.DiskSpace == nil {
		c.DiskSpace = statfsSpace
	}
	if c.FetchConcurrency <= 0 {
		c.FetchConcurrency = 4
	}
	if c.RetryBase <= 0 {
		c.RetryBase = time.Second
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 5 * time.Minute
	}
	if c.WatchInterval <= 0 {
		c.WatchInterval = time.Minute
	}
}

// Manager keeps the desired datasets in the tiered store: it places and fetches them, evicts
// at the watermarks, persists the index, and reports status. Its methods are safe for
// concurrent use; Set may be called before Run, but nothing is fetched until Run runs.
type Manager struct {
	cfg  Config
	clk  clock.Clock
	log  *slog.Logger
	def  Store
	kick chan struct{}

	mu        sync.Mutex
	datasets  map[string]*dsState // desired, by "namespace/name"
	gone      map[string]*dsState // deleted while their worker still ran
	index     map[string]*indexEntry
	pins      map[string]map[string]struct{} // dataset → holders
	loads     map[string]*loadState
	setOnce   bool
	nextWatch time.Time
	// roomEpoch counts the changes that may give a waiting dataset room: a dataset released,
	// removed or evicted, a fetch ended.
	roomEpoch uint64

	// Side effects gathered under mu, carried out by flush once mu is released.
	trash      []string
	trashSeq   int
	changed    []string
	indexGen   uint64
	indexDirty bool
	lastSave   time.Time

	ioMu     sync.Mutex // serializes index writes
	savedGen uint64

	lazy     bool       // lazy mounts work (lazy.go)
	lazyMu   sync.Mutex // serializes mounting and unmounting; taken before mu
	unmounts []mountOp  // lazy mounts to detach or close, gathered under mu
	stopped  bool       // Run has ended: no new lazy mounts
}

// dsState is one desired dataset; every field is guarded by Manager.mu.
type dsState struct {
	key, ns, name string
	spec          DatasetSpec
	store         Store
	storeErr      error
	dataKey       string // identity of the data (index.go)
	fp            string // everything in the spec: a change restarts the work
	gen           int    // bumped by each spec change: a worker of an older one is stale

	phase            Phase
	message          string
	reason           error // ErrTooLarge behind a Failed phase
	total, done      int64
	files, filesDone int
	meter            rateMeter
	inPlace          string // the directory of a dataset served in place

	want        bool // work is due: fetch, verify or refresh
	refresh     bool // the next work lists the sources again
	refreshReq  int  // refreshes asked for, and the last one a listing served
	refreshDone int
	blocked     bool   // failed until the spec changes (too large, bad spec)
	waitRoom    bool   // kept out by pinned datasets: try again once roomEpoch moves past roomAt
	roomAt      uint64 // roomEpoch when it found no room
	evicted     bool   // evicted: fetched again when asked for (Path, Pin, a DataLoad)
	running     bool
	cancel      context.CancelFunc
	attempts    int
	retryAt     time.Time
	priority    []string // dataset paths DataLoads want first
	removed     bool

	run    *fetchRun     // the files being fetched, for the lazy mount (lazy.go)
	runCh  chan struct{} // closed when run changes
	lazyFS *lazyFS       // the live lazy mount
	links  bool          // local mounts among remote ones: no lazy mount
}

// NewManager returns a Manager over cfg.Root, reading the index a previous run left there.
func NewManager(cfg Config) (*Manager, error) {
	cfg.setDefaults()
	var errs []error
	if cfg.Root == "" {
		errs = append(errs, errors.New("modelcache: Config.Root is required"))
	}
	if cfg.NewSource == nil {
		errs = append(errs, errors.New("modelcache: Config.NewSource is required"))
	}
	if cfg.Fetcher == nil {
		errs = append(errs, errors.New("modelcache: Config.Fetcher is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("modelcache: root: %w", err)
	}
	cfg.Root = root
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("modelcache: %w", err)
	}
	index, notes, err := loadIndex(root)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		cfg: cfg, clk: cfg.Clock, log: cfg.Logger,
		kick:     make(chan struct{}, 1),
		datasets: map[string]*dsState{}, gone: map[string]*dsState{},
		index: index, pins: map[string]map[string]struct{}{}, loads: map[string]*loadState{},
	}
	for _, n := range notes {
		m.log.Warn("model cache index mended", "problem", n)
	}
	if len(notes) > 0 {
		m.markDirtyLocked()
	}
	m.removeLeftovers()
	free, total, err := cfg.DiskSpace(root)
	if err != nil {
		return nil, fmt.Errorf("modelcache: size the default store: %w", err)
	}
	var cached int64
	for _, e := range index {
		if e.LevelDir == root {
			cached += e.Bytes
		}
	}
	m.def = DefaultStore(root, free, total, cached)
	if _, ok := cfg.Fetcher.(transferStarter); ok && !cfg.NoLazy {
		if err := m.probeLazy(); err != nil {
			m.log.Info("lazy dataset mounts off: datasets are served once cached", "error", err)
		} else {
			m.lazy = true
		}
	}
	m.log.Debug("model cache opened", "root", root, "datasets", len(index), "default_quota", m.def.Levels[0].Dirs[0].Quota)
	m.flush()
	return m, nil
}

// removeLeftovers removes what an interrupted run left: temporary index files and directories
// being removed.
func (m *Manager) removeLeftovers() {
	tmps, _ := filepath.Glob(atomicfile.TempPattern(m.cfg.Root, indexName))
	dirs := map[string]bool{}
	for _, e := range m.index {
		dirs[filepath.Join(e.LevelDir, e.Namespace)] = true
	}
	for d := range dirs {
		g, _ := filepath.Glob(filepath.Join(d, "*.removing-*"))
		tmps = append(tmps, g...)
	}
	for _, p := range tmps {
		_ = os.RemoveAll(p)
	}
	// Lazy mounts of a run that was killed: their connections are dead (ENOTCONN).
	lazy, _ := filepath.Glob(filepath.Join(m.cfg.Root, ".lazy", "*", "*"))
	for _, p := range lazy {
		_ = unix.Unmount(p, unix.MNT_DETACH)
		_ = os.Remove(p)
	}
}

// Run fetches, evicts and runs DataLoads until ctx ends, then stops every fetch, writes the
// index and returns once its goroutines have exited. It returns nil, or the error of that last
// index write.
func (m *Manager) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var timer clock.Timer
	for {
		m.mu.Lock()
		next := m.scheduleLocked(ctx, &wg)
		m.mu.Unlock()
		m.flush()
		if timer != nil {
			timer.Stop()
			timer = nil
		}
		if !next.IsZero() {
			timer = m.clk.AfterFunc(max(next.Sub(m.clk.Now()), 0), m.wake)
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			cancel()
			wg.Wait()
			m.stopMounts()
			m.mu.Lock()
			m.markDirtyLocked()
			m.mu.Unlock()
			return m.flush()
		case <-m.kick:
		}
	}
}

// wake asks Run for a pass; it never blocks.
func (m *Manager) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Set gives the datasets the cache should hold. New ones are fetched, changed ones (any field
// of the spec, its runtime's or its secrets) are fetched again as far as their data changed,
// and those no longer given are stopped and removed as their clean policy says (cache.go).
func (m *Manager) Set(specs []DatasetSpec) {
	m.mu.Lock()
	seen := map[string]bool{}
	for _, s := range specs {
		key := s.Namespace + "/" + s.Name
		seen[key] = true
		fp := fingerprint(s)
		d := m.datasets[key]
		if d != nil && d.fp == fp {
			continue
		}
		if d == nil {
			d = &dsState{key: key, ns: s.Namespace, name: s.Name, phase: PhasePending}
			m.datasets[key] = d
		}
		m.applySpecLocked(d, s, fp)
	}
	for key, d := range m.datasets {
		if !seen[key] {
			m.removeLocked(d)
		}
	}
	if !m.setOnce {
		m.setOnce = true
		for key, e := range m.index {
			if m.datasets[key] == nil && !e.Orphan {
				e.Orphan = true
				m.markDirtyLocked()
			}
		}
	}
	m.mu.Unlock()
	m.flush()
	m.wake()
}

func (m *Manager) applySpecLocked(d *dsState, s DatasetSpec, fp string) {
	if d.running {
		d.cancel()
	}
	d.spec, d.fp, d.dataKey = s, fp, dataKey(s.Dataset)
	d.store, d.storeErr = StoreFor(s.Runtime, m.def)
	d.gen++
	d.want, d.blocked, d.waitRoom, d.evicted = true, false, false, false
	d.attempts, d.retryAt, d.reason = 0, time.Time{}, nil
	d.inPlace = ""
	if e := m.index[d.key]; e != nil && (e.Orphan || e.DropOnRelease) {
		e.Orphan, e.DropOnRelease = false, false
		m.markDirtyLocked()
	}
	if d.storeErr == nil && m.hitLocked(d) {
		return // cached whole already: stays (or becomes) Ready with no flicker
	}
	m.setPhaseLocked(d, PhasePending, "waiting to be fetched")
}

func (m *Manager) removeLocked(d *dsState) {
	delete(m.datasets, d.key)
	d.removed = true
	m.maybeUnmountLocked(d, true)
	m.changed = append(m.changed, d.key)
	if d.running {
		d.cancel()
		m.gone[d.key] = d
		return
	}
	m.finalizeRemovalLocked(d)
}

// finalizeRemovalLocked applies a deleted dataset's clean policy to its cache entry, once no
// worker of it runs.
func (m *Manager) finalizeRemovalLocked(d *dsState) {
	if d.inPlace == m.inPlaceDir(d) && m.datasets[d.key] == nil {
		m.trashLocked(d.inPlace)
	}
	e := m.index[d.key]
	if e == nil || m.datasets[d.key] != nil {
		return // nothing cached, or the dataset came back
	}
	switch cleanPolicy(d.spec) {
	case fluid.CleanPolicyOnDemand, fluid.CleanPolicyOnFuseChanged:
		e.Orphan = true
		m.log.Info("dataset deleted: cache kept until evicted", "dataset", d.key, "dir", e.Dir)
	default:
		if len(m.pins[d.key]) > 0 {
			e.Orphan, e.DropOnRelease = true, true
			m.log.Info("dataset deleted: cache removed once released", "dataset", d.key, "dir", e.Dir)
		} else {
			m.dropEntryLocked(e)
			m.log.Info("dataset deleted: cache removed", "dataset", d.key, "dir", e.Dir)
		}
	}
	m.markDirtyLocked()
}

func cleanPolicy(s DatasetSpec) fluid.FuseCleanPolicy {
	if s.Runtime == nil || s.Runtime.CleanPolicy == "" {
		return fluid.CleanPolicyOnRuntimeDeleted
	}
	return s.Runtime.CleanPolicy
}

// Pin records that holder (a replica) has the dataset mounted: it is not evicted until every
// holder unpins it. Pinning a dataset that was evicted fetches it again.
func (m *Manager) Pin(namespace, name, holder string) {
	key := namespace + "/" + name
	m.mu.Lock()
	if m.pins[key] == nil {
		m.pins[key] = map[string]struct{}{}
	}
	m.pins[key][holder] = struct{}{}
	m.touchLocked(key)
	if d := m.datasets[key]; d != nil {
		m.demandLocked(d)
	}
	m.mu.Unlock()
	m.flush()
}

// Unpin records that holder no longer has the dataset mounted.
func (m *Manager) Unpin(namespace, name, holder string) {
	key := namespace + "/" + name
	m.mu.Lock()
	if _, ok := m.pins[key][holder]; !ok {
		m.mu.Unlock()
		return
	}
	delete(m.pins[key], holder)
	if len(m.pins[key]) == 0 {
		delete(m.pins, key)
		if d := m.datasets[key]; d != nil {
			m.maybeUnmountLocked(d, false)
		}
		if e := m.index[key]; e != nil && e.DropOnRelease {
			m.dropEntryLocked(e)
			m.log.Info("deleted dataset released: cache removed", "dataset", key, "dir", e.Dir)
		}
		m.roomChangedLocked()
	}
	m.touchLocked(key)
	m.mu.Unlock()
	m.flush()
	m.wake()
}

func (m *Manager) touchLocked(key string) {
	if e := m.index[key]; e != nil {
		e.LastUsed = m.clk.Now()
		m.markDirtyLocked()
	}
}

// demandLocked fetches an evicted dataset again: something wants it.
func (m *Manager) demandLocked(d *dsState) {
	if !d.evicted || d.running || d.want {
		return
	}
	d.evicted, d.want = false, true
	m.setPhaseLocked(d, PhasePending, d.message+"; fetching again")
	m.wake()
}

// roomChangedLocked lets datasets that waited for room try again.
func (m *Manager) roomChangedLocked() { m.roomEpoch++ }

func (m *Manager) pinnedLocked(key string) bool {
	if len(m.pins[key]) > 0 {
		return true
	}
	if d := m.datasets[key]; d != nil && d.running {
		return true
	}
	g := m.gone[key]
	return g != nil && g.running
}

func (m *Manager) setPhaseLocked(d *dsState, p Phase, msg string) {
	if d.phase == p && d.message == msg {
		return
	}
	d.phase, d.message = p, msg
	m.changed = append(m.changed, d.key)
}

func (m *Manager) markDirtyLocked() {
	m.indexGen++
	m.indexDirty = true
}

// trashLocked takes dir out of the way at once (a rename), to be removed by flush.
func (m *Manager) trashLocked(dir string) {
	m.trashSeq++
	tmp := fmt.Sprintf("%s.removing-%d", dir, m.trashSeq)
	switch err := os.Rename(dir, tmp); {
	case err == nil:
		m.trash = append(m.trash, tmp)
	case !errors.Is(err, fs.ErrNotExist):
		m.trash = append(m.trash, dir)
	}
}

func (m *Manager) dropEntryLocked(e *indexEntry) {
	if m.index[e.key()] == e {
		delete(m.index, e.key())
	}
	m.trashLocked(e.Dir)
	m.markDirtyLocked()
	m.roomChangedLocked()
}

// flush carries out what was decided under mu: removes trashed directories, writes the index
// when it changed, and calls OnChange. It returns the index write's error.
func (m *Manager) flush() error {
	m.flushMounts()
	m.mu.Lock()
	trash, changed := m.trash, m.changed
	m.trash, m.changed = nil, nil
	var snap []*indexEntry
	gen := m.indexGen
	if m.indexDirty {
		m.indexDirty = false
		m.lastSave = m.clk.Now()
		for _, e := range m.index {
			snap = append(snap, e.clone())
		}
		slices.SortFunc(snap, func(a, b *indexEntry) int { return strings.Compare(a.key(), b.key()) })
		if snap == nil {
			snap = []*indexEntry{}
		}
	}
	m.mu.Unlock()

	for _, p := range trash {
		if err := os.RemoveAll(p); err != nil {
			m.log.Warn("model cache: remove", "dir", p, "error", err)
		}
	}
	var err error
	if snap != nil {
		m.ioMu.Lock()
		if gen > m.savedGen {
			if err = writeIndex(m.cfg.Root, snap); err != nil {
				m.log.Error("model cache index not saved", "error", err)
				m.mu.Lock()
				m.indexDirty = true
				m.mu.Unlock()
			} else {
				m.savedGen = gen
			}
		}
		m.ioMu.Unlock()
	}
	if m.cfg.OnChange != nil {
		slices.Sort(changed)
		for _, key := range slices.Compact(changed) {
			ns, name, _ := strings.Cut(key, "/")
			m.cfg.OnChange(ns, name)
		}
	}
	return err
}

// scheduleLocked starts the work that is due and returns when the next pass is (zero: none
// planned).
func (m *Manager) scheduleLocked(ctx context.Context, wg *sync.WaitGroup) time.Time {
	now := m.clk.Now()
	next := m.scheduleLoadsLocked(now)
	keys := slices.Sorted(maps.Keys(m.datasets))
	for _, key := range keys {
		d := m.datasets[key]
		if d.waitRoom && d.roomAt != m.roomEpoch {
			d.waitRoom = false
		}
		if !d.want || d.running || d.blocked || d.waitRoom || ctx.Err() != nil {
			continue
		}
		if g := m.gone[key]; g != nil && g.running {
			continue // the deleted dataset's worker still winds down; it kicks when done
		}
		if !d.retryAt.IsZero() && now.Before(d.retryAt) {
			next = earliest(next, d.retryAt)
			continue
		}
		if d.storeErr != nil {
			d.want, d.blocked = false, true
			m.setPhaseLocked(d, PhaseFailed, d.storeErr.Error())
			continue
		}
		if m.hitLocked(d) {
			continue
		}
		m.startLocked(ctx, wg, d)
	}
	m.evalLoadsLocked(now)
	return next
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// hitLocked serves a dataset from a complete cache entry of the same data, with no I/O.
func (m *Manager) hitLocked(d *dsState) bool {
	e := m.index[d.key]
	if e == nil || !e.Complete || e.DataKey != d.dataKey || d.refresh {
		return false
	}
	if _, ok := d.store.find(e.LevelDir); !ok {
		return false
	}
	d.want, d.attempts, d.retryAt = false, 0, time.Time{}
	d.total, d.done, d.files, d.filesDone = 0, 0, len(e.Files), len(e.Files)
	for _, f := range e.Files {
		d.total += f.Object.Size
	}
	d.done = d.total
	m.setPhaseLocked(d, PhaseReady, "")
	return true
}

// job is what a worker works from: a snapshot taken when it starts.
type job struct {
	gen        int
	spec       DatasetSpec
	store      Store
	dataKey    string
	refresh    bool
	refreshSeq int
	priority   []string
}

func (m *Manager) startLocked(ctx context.Context, wg *sync.WaitGroup, d *dsState) {
	j := job{
		gen: d.gen, spec: d.spec, store: d.store, dataKey: d.dataKey,
		refresh: d.refresh, refreshSeq: d.refreshReq, priority: slices.Clone(d.priority),
	}
	wctx, cancel := context.WithCancel(ctx)
	d.running, d.cancel, d.want, d.refresh = true, cancel, false, false
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer cancel()
		err := m.fetch(wctx, d, j)
		m.finish(wctx, d, j, err)
	}()
}

// finish records a worker's end.
func (m *Manager) finish(ctx context.Context, d *dsState, j job, err error) {
	m.mu.Lock()
	d.running, d.cancel = false, nil
	if m.index[d.key] != nil && !errors.Is(err, errNoRoom) {
		m.roomChangedLocked() // what it holds is no longer pinned as being fetched
	}
	switch {
	case d.removed:
		if m.gone[d.key] == d {
			delete(m.gone, d.key)
		}
		m.finalizeRemovalLocked(d)
	case d.gen != j.gen || ctx.Err() != nil:
		// Stale (the spec changed: the next pass starts over) or shutting down.
	case err != nil:
		m.failLocked(d, j, err)
	}
	m.evalLoadsLocked(m.clk.Now())
	m.mu.Unlock()
	m.flush()
	m.wake()
}

// refreshError is a failed listing of a dataset that is cached whole: it stays Ready.
type refreshError struct{ err error }

func (e *refreshError) Error() string { return e.err.Error() }
func (e *refreshError) Unwrap() error { return e.err }

// specError is a failure that only a spec change can mend.
type specError struct{ err error }

func (e *specError) Error() string { return e.err.Error() }
func (e *specError) Unwrap() error { return e.err }

func (m *Manager) failLocked(d *dsState, j job, err error) {
	var rerr *refreshError
	var serr *specError
	switch {
	case errors.As(err, &rerr):
		d.refreshDone = max(d.refreshDone, j.refreshSeq)
		m.failLoadsLocked(d.key, "listing the dataset's source failed: "+err.Error())
		m.log.Debug("dataset refresh failed: keeping the cached copy", "dataset", d.key, "error", err)
	case errors.Is(err, errNoRoom):
		d.want, d.waitRoom, d.roomAt = true, true, m.roomEpoch
		m.setPhaseLocked(d, PhasePending, err.Error())
	case errors.Is(err, ErrTooLarge), errors.As(err, &serr):
		d.blocked, d.reason = true, err
		d.retryAt = time.Time{}
		m.setPhaseLocked(d, PhaseFailed, err.Error())
		m.log.Warn("dataset cannot be cached", "dataset", d.key, "error", err)
	default:
		d.attempts++
		d.want = true
		d.retryAt = m.clk.Now().Add(m.backoff(d.attempts))
		m.setPhaseLocked(d, PhaseFailed, err.Error())
		m.log.Warn("dataset fetch failed", "dataset", d.key, "attempt", d.attempts, "retry_at", d.retryAt, "error", err)
	}
}

// backoff is the wait before attempt n+1 after n failures: RetryBase doubling, up to RetryMax.
func (m *Manager) backoff(n int) time.Duration {
	d := m.cfg.RetryBase
	for i := 1; i < n && d < m.cfg.RetryMax; i++ {
		d *= 2
	}
	return min(d, m.cfg.RetryMax)
}

// localDir reports the directory of a Source served in place.
func localDir(src Source) (string, bool) {
	l, ok := src.(Local)
	if !ok {
		return "", false
	}
	return l.Dir(), true
}

// sourceError is err as the status shows it: with the source named once.
func sourceError(src Source, err error) error {
	if s := src.String(); s != "" && !strings.Contains(err.Error(), s) {
		return fmt.Errorf("%s: %w", s, err)
	}
	return err
}

// link is a local mount inside a dataset that also has remote mounts: a symbolic link at its
// path in the dataset's directory.
type link struct {
	path   string // in the dataset, slash-separated
	target string
}

// fetch does one dataset's work: opens its mounts, lists them, places the dataset (evicting
// what must go), and fetches the files not yet cached.
func (m *Manager) fetch(ctx context.Context, d *dsState, j job) (err error) {
	// A refresh of a dataset cached whole that fails before anything changed keeps it Ready.
	prepared := false
	m.mu.Lock()
	e0 := m.index[d.key]
	cachedWhole := j.refresh && e0 != nil && e0.Complete && e0.DataKey == j.dataKey
	m.mu.Unlock()
	defer func() {
		if err != nil && cachedWhole && !prepared && !errors.Is(err, context.Canceled) {
			err = &refreshError{err}
		}
	}()
	ds := j.spec.Dataset
	if ds == nil || len(ds.Spec.Mounts) == 0 {
		return &specError{fmt.Errorf("dataset %s has no mounts", d.key)}
	}
	mounts := ds.Spec.Mounts
	srcs := make([]Source, len(mounts))
	for i := range mounts {
		mt := &mounts[i]
		secrets := map[string]string{}
		for _, o := range ds.Spec.MountEncryptOptions(mt) {
			v, ok := j.spec.Secrets[o.Name]
			if !ok {
				return &specError{fmt.Errorf("mount %s: encrypt option %s: its Secret %s was not resolved", mt.MountPoint, o.Name, o.ValueFrom.SecretKeyRef.Name)}
			}
			secrets[o.Name] = v
		}
		src, err := m.cfg.NewSource(*mt, ds.Spec.MountOptions(mt), secrets)
		if err != nil {
			return fmt.Errorf("mount %s: %w", mt.MountPoint, err)
		}
		srcs[i] = src
	}

	var files []indexedFile
	var links []link
	owner := map[string]string{}
	for i, src := range srcs {
		base := strings.Trim(mounts[i].UFSPath(), "/")
		if dir, ok := localDir(src); ok {
			if fi, err := os.Stat(dir); err != nil {
				return sourceError(src, err)
			} else if !fi.IsDir() {
				return sourceError(src, fmt.Errorf("%s is not a directory", dir))
			}
			links = append(links, link{path: base, target: dir})
			continue
		}
		objs, err := src.List(ctx)
		if err != nil {
			return sourceError(src, err)
		}
		for _, o := range objs {
			p := path.Join(base, o.Key)
			if !localPath(p) {
				return &specError{sourceError(src, fmt.Errorf("object %q lies outside the dataset", o.Key))}
			}
			if other, dup := owner[p]; dup {
				return &specError{fmt.Errorf("%s and %s both have /%s", other, src, p)}
			}
			owner[p] = src.String()
			files = append(files, indexedFile{Path: p, Mount: i, Object: o})
		}
	}
	if len(files) == 0 && len(links) > 0 {
		return m.serveInPlace(d, j, links)
	}
	for _, l := range links {
		if l.path == "" {
			return &specError{fmt.Errorf("local mount %s is at the dataset's root, which its other mounts fill", l.target)}
		}
	}

	e, stale, err := m.prepare(d, j, files)
	if err != nil {
		return err
	}
	prepared = true
	m.flush() // the index knows the directory before anything is written in it
	for _, p := range stale {
		_ = os.Remove(filepath.Join(e.Dir, filepath.FromSlash(p)))
	}
	if err := os.MkdirAll(e.Dir, 0o755); err != nil {
		return fmt.Errorf("dataset %s: %w", d.key, err)
	}
	for _, l := range links {
		if err := placeLink(e.Dir, l); err != nil {
			return fmt.Errorf("dataset %s: %w", d.key, err)
		}
	}

	todo := pending(e.Files, j.priority)
	if ts, ok := m.cfg.Fetcher.(transferStarter); ok {
		if err := m.fetchFilesLazily(ctx, ts, d, j, e, srcs, todo, len(links) > 0); err != nil {
			return err
		}
		return m.complete(d, j, e, len(todo) > 0)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(m.cfg.FetchConcurrency)
	for _, i := range todo {
		f := e.Files[i]
		src := srcs[f.Mount]
		g.Go(func() error {
			dst := filepath.Join(e.Dir, filepath.FromSlash(f.Path))
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			var got atomic.Int64
			err := m.cfg.Fetcher.Fetch(gctx, src, f.Object, dst, func(delta int64) {
				got.Add(delta)
				m.progress(d, j.gen, delta)
			})
			if err != nil {
				return sourceError(src, err)
			}
			m.fileDone(d, j.gen, e, i, f.Object.Size-got.Load())
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return m.complete(d, j, e, len(todo) > 0)
}

// prepare reconciles the listing with the dataset's cache entry, placing the dataset when it
// has none, and returns the entry and the files it had that the listing no longer has.
func (m *Manager) prepare(d *dsState, j job, files []indexedFile) (*indexEntry, []string, error) {
	now := m.clk.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if d.gen != j.gen {
		return nil, nil, context.Canceled
	}
	e := m.index[d.key]
	if e != nil {
		if _, ok := j.store.find(e.LevelDir); !ok || e.DataKey != j.dataKey {
			m.log.Info("dataset changed: cached copy removed", "dataset", d.key, "dir", e.Dir)
			m.dropEntryLocked(e)
			e = nil
		}
	}
	var stale []string
	wasComplete := e != nil && e.Complete
	changed := false
	if e != nil {
		stale, changed = mergeFiles(e.Files, files)
		if err := m.roomInPlaceLocked(d.key, j.store, e, reserve(files)); err != nil {
			return e, nil, err
		}
		e.Files = files
	} else {
		pl, err := place(j.store, m.usesLocked(j.store, d.key), d.key, reserve(files))
		if err != nil {
			return nil, nil, err
		}
		m.evictLocked(pl.Evict, d.key)
		e = &indexEntry{
			Namespace: d.ns, Name: d.name, DataKey: j.dataKey, Medium: pl.At.Medium,
			LevelDir: pl.At.Path, Dir: filepath.Join(pl.At.Path, d.ns, d.name),
			Files: files, LastUsed: now,
		}
		m.index[d.key] = e
		m.log.Debug("dataset placed", "dataset", d.key, "level", e.Medium, "dir", e.Dir, "evicted", pl.Evict)
	}
	d.total, d.done, d.files, d.filesDone = 0, 0, len(files), 0
	for _, f := range files {
		d.total += f.Object.Size
		if f.Done {
			d.done += f.Object.Size
			d.filesDone++
		}
	}
	e.Complete = e.Complete && d.filesDone == d.files && len(stale) == 0
	m.markDirtyLocked()
	d.meter.reset()
	d.meter.add(now, d.done)
	d.refreshDone = max(d.refreshDone, j.refreshSeq)
	if wasComplete && changed {
		m.sourceChangedLocked(d.key, now)
	}
	if d.filesDone < d.files {
		m.setPhaseLocked(d, PhaseFetching, "")
	}
	return e, stale, nil
}

// mergeFiles marks done each listed file that the entry has done with the same size and ETag
// (or modification time when the store gives no ETag). It returns the entry's files the listing
// lacks, and whether anything differs.
func mergeFiles(old, listed []indexedFile) (stale []string, changed bool) {
	byPath := make(map[string]*indexedFile, len(old))
	for i := range old {
		byPath[old[i].Path] = &old[i]
	}
	for i := range listed {
		f := &listed[i]
		o := byPath[f.Path]
		if o == nil {
			changed = true
			continue
		}
		delete(byPath, f.Path)
		same := o.Object.Size == f.Object.Size && o.Object.ETag == f.Object.ETag &&
			(f.Object.ETag != "" || o.Object.ModTime.Equal(f.Object.ModTime))
		if !same {
			changed = true
		}
		f.Done = o.Done && same
	}
	for p := range byPath {
		stale = append(stale, p)
		changed = true
	}
	slices.Sort(stale)
	return stale, changed
}

// roomInPlaceLocked makes room in e's directory for the dataset to take size bytes there.
func (m *Manager) roomInPlaceLocked(key string, st Store, e *indexEntry, size int64) error {
	ld, _ := st.find(e.LevelDir)
	if size > ld.Quota {
		return reasonf(ErrTooLarge, "dataset %s needs %s; level %s at %s holds %s (quota)", key, formatBytes(size), ld.Medium, ld.Path, formatBytes(ld.Quota))
	}
	u := m.useLocked(ld.Path, key)
	res := eviction.Plan(eviction.Usage{Quota: ld.Quota, Used: u.Used + max(size, e.Bytes)}, u.Entries, ld.High, ld.Low)
	if res.Used > ld.Quota {
		return reasonf(errNoRoom, "dataset %s needs %s in %s, which is full of datasets in use or being fetched", key, formatBytes(size), ld.Path)
	}
	m.evictLocked(res.Evict, key)
	return nil
}

// usesLocked is what each directory of st holds, leaving out the dataset key.
func (m *Manager) usesLocked(st Store, key string) map[string]dirUse {
	out := map[string]dirUse{}
	for _, ld := range st.dirs() {
		out[ld.Path] = m.useLocked(ld.Path, key)
	}
	return out
}

// useLocked is what the level directory dir holds, leaving out the dataset skip. A dataset not
// complete counts the room reserved for it.
func (m *Manager) useLocked(dir, skip string) dirUse {
	var u dirUse
	for key, e := range m.index {
		if e.LevelDir != dir || key == skip {
			continue
		}
		b := e.Bytes
		if !e.Complete {
			b = max(b, reserve(e.Files))
		}
		u.Used += b
		u.Entries = append(u.Entries, eviction.Entry{Key: key, Bytes: b, LastUsed: e.LastUsed, Pinned: m.pinnedLocked(key)})
	}
	slices.SortFunc(u.Entries, func(a, b eviction.Entry) int { return strings.Compare(a.Key, b.Key) })
	return u
}

// evictLocked evicts the datasets keys to make room for forKey.
func (m *Manager) evictLocked(keys []string, forKey string) {
	for _, key := range keys {
		e := m.index[key]
		if e == nil || m.pinnedLocked(key) {
			continue
		}
		m.dropEntryLocked(e)
		m.log.Info("dataset evicted", "dataset", key, "level", e.Medium, "dir", e.LevelDir, "for", forKey)
		if d := m.datasets[key]; d != nil {
			d.evicted, d.want = true, false
			d.done, d.filesDone = 0, 0
			m.setPhaseLocked(d, PhasePending, fmt.Sprintf("evicted from %s (%s) at %s to make room for %s; fetched again when a replica asks for it",
				e.Medium, e.LevelDir, m.clk.Now().UTC().Format(time.RFC3339), forKey))
		}
	}
}

// pending lists the indexes of files not done, those under a priority path first.
func pending(files []indexedFile, priority []string) []int {
	var first, rest []int
	for i, f := range files {
		switch {
		case f.Done:
		case underAny(f.Path, priority):
			first = append(first, i)
		default:
			rest = append(rest, i)
		}
	}
	return append(first, rest...)
}

// underAny reports whether the dataset path p is one of paths or inside one; paths are
// slash-separated without a leading slash, "" meaning the whole dataset.
func underAny(p string, paths []string) bool {
	for _, t := range paths {
		if t == "" || p == t || strings.HasPrefix(p, t+"/") {
			return true
		}
	}
	return false
}

func placeLink(dir string, l link) error {
	p := filepath.Join(dir, filepath.FromSlash(l.path))
	if cur, err := os.Readlink(p); err == nil && cur == l.target {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	_ = os.Remove(p)
	return os.Symlink(l.target, p)
}

// serveInPlace serves a dataset made only of local mounts where it lies. One mount at the
// dataset's root (path "/") is served as its own directory; otherwise the dataset is a
// directory of symbolic links, one at each mount's path, under Root/.inplace (replicas see the
// host's filesystem, so the links resolve in their sandbox too).
func (m *Manager) serveInPlace(d *dsState, j job, links []link) error {
	dir := links[0].target
	if len(links) > 1 || links[0].path != "" {
		dir = m.inPlaceDir(d)
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("dataset %s: %w", d.key, err)
		}
		for _, l := range links {
			if l.path == "" {
				return &specError{fmt.Errorf("local mount %s is at the dataset's root, which its other mounts fill", l.target)}
			}
			if err := placeLink(dir, l); err != nil {
				return fmt.Errorf("dataset %s: %w", d.key, err)
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if d.gen != j.gen {
		return context.Canceled
	}
	d.inPlace = dir
	d.attempts, d.retryAt = 0, time.Time{}
	d.refreshDone = max(d.refreshDone, j.refreshSeq)
	m.setPhaseLocked(d, PhaseReady, "")
	return nil
}

func (m *Manager) inPlaceDir(d *dsState) string {
	return filepath.Join(m.cfg.Root, ".inplace", d.ns, d.name)
}

// progress adds delta bytes to a fetching dataset.
func (m *Manager) progress(d *dsState, gen int, delta int64) {
	now := m.clk.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if d.gen != gen {
		return
	}
	d.done = min(d.done+delta, d.total)
	d.meter.add(now, d.done)
}

// fileDone records a fetched file; adjust is what its progress did not report.
func (m *Manager) fileDone(d *dsState, gen int, e *indexEntry, i int, adjust int64) {
	now := m.clk.Now()
	m.mu.Lock()
	if d.gen != gen || m.index[d.key] != e {
		m.mu.Unlock()
		return
	}
	e.Files[i].Done = true
	d.filesDone++
	d.done = min(d.done+adjust, d.total)
	d.meter.add(now, d.done)
	save := now.Sub(m.lastSave) >= time.Second
	if save {
		m.markDirtyLocked()
	}
	m.evalLoadsLocked(now)
	m.mu.Unlock()
	if save {
		m.flush()
	}
}

// complete marks a dataset whose files are all fetched Ready, then evicts at the watermarks of
// its directory (never the dataset itself: a replica is about to mount it).
func (m *Manager) complete(d *dsState, j job, e *indexEntry, fetched bool) error {
	bytes, err := diskUsage(e.Dir)
	if err != nil {
		return fmt.Errorf("dataset %s: %w", d.key, err)
	}
	now := m.clk.Now()
	m.mu.Lock()
	if d.gen != j.gen || m.index[d.key] != e {
		m.mu.Unlock()
		return context.Canceled
	}
	e.Complete, e.Bytes = true, bytes
	if fetched {
		e.LastUsed = now
	}
	d.done, d.filesDone = d.total, d.files
	d.attempts, d.retryAt = 0, time.Time{}
	m.setPhaseLocked(d, PhaseReady, "")
	d.setRunLocked(nil) // lazy readers read the cache directory from now on
	m.maybeUnmountLocked(d, false)
	m.markDirtyLocked()
	if ld, ok := j.store.find(e.LevelDir); ok {
		u := m.useLocked(ld.Path, "")
		for i := range u.Entries {
			if u.Entries[i].Key == d.key {
				u.Entries[i].Pinned = true
			}
		}
		res := eviction.Plan(eviction.Usage{Quota: ld.Quota, Used: u.Used}, u.Entries, ld.High, ld.Low)
		m.evictLocked(res.Evict, d.key)
		if res.Short {
			m.log.Warn("cache level over its low watermark with datasets in use", "dir", ld.Path, "used", res.Used, "quota", ld.Quota)
		}
	}
	if fetched {
		m.log.Info("dataset cached", "dataset", d.key, "level", e.Medium, "dir", e.Dir, "bytes", bytes, "files", len(e.Files))
	}
	m.mu.Unlock()
	return nil
}

// dataKey is a digest of what a dataset's files come from: each mount's point, path and
// options. Names and secrets are left out: renaming a key or rotating it keeps the cache.
func dataKey(ds *fluid.Dataset) string {
	if ds == nil {
		return ""
	}
	type mountKey struct {
		MountPoint string            `json:"mountPoint"`
		Path       string            `json:"path"`
		Options    map[string]string `json:"options"`
	}
	var ks []mountKey
	for i := range ds.Spec.Mounts {
		mt := &ds.Spec.Mounts[i]
		ks = append(ks, mountKey{mt.MountPoint, mt.UFSPath(), ds.Spec.MountOptions(mt)})
	}
	return digest(ks)
}

// fingerprint is a digest of the whole spec, secrets included (only their digest is kept).
func fingerprint(s DatasetSpec) string {
	return digest(struct {
		Dataset *fluid.Dataset
		Runtime *RuntimeSpec
		Secrets map[string]string
	}{s.Dataset, s.Runtime, s.Secrets})
}

func digest(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("modelcache: digest: %v", err)) // plain data always encodes
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}
