package imagecache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/distribution/reference"

	"github.com/infera-dev/infera/internal/clock"
	"github.com/infera-dev/infera/internal/container"
)

// Engine is what the Manager needs of a container engine; *container.Engine is one.
type Engine interface {
	Pull(ctx context.Context, ref string, auth *container.Auth, progress func(container.PullProgress)) (container.Image, error)
	InspectImage(ctx context.Context, ref string) (container.Image, error)
	RemoveImage(ctx context.Context, ref string) error
	ImageUsers(ctx context.Context) (map[string]int, error)
}

// Cache is one ImageCache as the Manager keeps it.
type Cache struct {
	Name   string
	Images []string
	// PullSecrets are the .dockerconfigjson contents of the cache's imagePullSecrets, in the
	// CR's order.
	PullSecrets [][]byte
	// SizeGiB is imageCacheSize: the most the images infera pulled for the cache may take; 0:
	// unbounded (the CR's default of 20 GiB is the caller's to apply: ack.ImageCache.SetDefaults).
	SizeGiB int
	// RetentionDays is retentionDays: an image infera pulled and no replica used for this long
	// is evicted; 0: kept forever.
	RetentionDays int
}

// Config is every dependency of a Manager.
type Config struct {
	// Dir holds the state file (imagecache.json); it is created if missing.
	Dir    string
	Engine Engine
	Clock  clock.Clock  // nil: clock.Real
	Logger *slog.Logger // nil: discard
	// OnChange is called, never with a lock held, after a status changed (a state, a phase,
	// a message; pull progress at most once a second). It must not block.
	OnChange func()
	// PullBackoff spaces the retries of a failed pull; zero: 10s doubling to 5 minutes.
	PullBackoff Backoff
	// Interval is how often retention and size are checked and Ready images looked up again
	// (one removed behind infera's back is pulled again); 0: one minute.
	Interval time.Duration
}

// Manager keeps the desired ImageCaches' images in the engine. Its methods are safe for
// concurrent use; Set may be called before Run, but nothing is looked up, pulled or removed
// until Run runs.
type Manager struct {
	cfg  Config
	clk  clock.Clock
	log  *slog.Logger
	kick chan struct{}

	mu      sync.Mutex
	caches  map[string]*cacheRec
	images  map[string]*imageRec  // by normalized reference
	saved   map[string]savedCache // the state file's caches, until the first Set
	setOnce bool                  // Set was called: an image no cache lists is truly unwanted
	pulling *imageRec             // the one pull in flight
	cancel  context.CancelFunc    // cancels it
	over    map[string]string     // the policy's notes, by cache
	dirty   bool                  // the state file is behind
	changed bool                  // a status changed since OnChange was last called
	lastPro time.Time             // when progress last called OnChange
}

// cacheRec is one desired cache; guarded by Manager.mu.
type cacheRec struct {
	spec    Cache
	refs    []string // normalized, by index of spec.Images; "" where invalid
	invalid []string // the parse error, by index
	fp      string
	evicted map[string]string // ref → reason
	ready   bool              // has been Ready
	phase   Phase
	message string
}

// imageRec is one image some cache lists (or one infera pulled and has not removed yet);
// guarded by Manager.mu.
type imageRec struct {
	ref string
	// Persisted.
	id, digest         string
	size               int64
	owned              bool
	pulledAt, lastUsed time.Time
	// This run's.
	known    bool  // looked up in the engine
	state    State // Pending, Pulling, Ready or Failed
	reason   string
	current  int64
	total    int64
	attempts int
	retryAt  time.Time
}

// New returns a Manager keeping its state in cfg.Dir, reading what a previous run left there.
func New(cfg Config) (*Manager, error) {
	var errs []error
	if cfg.Dir == "" {
		errs = append(errs, errors.New("imagecache: Config.Dir is required"))
	}
	if cfg.Engine == nil {
		errs = append(errs, errors.New("imagecache: Config.Engine is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	cfg.Clock = clock.Or(cfg.Clock)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.PullBackoff = cfg.PullBackoff.withDefaults()
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("imagecache: %w", err)
	}
	removeTemps(cfg.Dir)
	f, note, err := loadState(cfg.Dir)
	if err != nil {
		return nil, err
	}
	m := &Manager{
		cfg: cfg, clk: cfg.Clock, log: cfg.Logger,
		kick:   make(chan struct{}, 1),
		caches: map[string]*cacheRec{}, images: map[string]*imageRec{}, saved: map[string]savedCache{},
	}
	if note != "" {
		m.log.Warn("image cache state unreadable", "problem", note)
	}
	for _, s := range f.Images {
		key, err := normalize(s.Ref)
		if err != nil || key != s.Ref {
			continue
		}
		m.images[key] = &imageRec{
			ref: key, id: s.ID, digest: s.Digest, size: s.Size, owned: s.Owned,
			pulledAt: s.PulledAt, lastUsed: s.LastUsed,
			state: StatePending, reason: reasonNotLookedUp,
		}
	}
	for _, c := range f.Caches {
		m.saved[c.Name] = c
	}
	return m, nil
}

// normalize is the reference image names: "app:v1" is "docker.io/library/app:v1", and "app"
// is "app:latest", as the kubelet and the engine read them.
func normalize(image string) (string, error) {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "", fmt.Errorf("invalid image reference %q: %w", image, err)
	}
	return reference.TagNameOnly(named).String(), nil
}

func fingerprint(c Cache) string {
	b, _ := json.Marshal(struct {
		Images         []string
		Secrets        [][]byte
		Size, Retained int
	}{c.Images, c.PullSecrets, c.SizeGiB, c.RetentionDays})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// Set gives the caches to keep, all of them. A new cache's images are looked up and pulled; a
// changed cache (any field) forgets its evictions and its images' back-off; a cache no longer
// given stops being tracked, and the images infera pulled that no cache still wants are
// removed from the engine once no container uses them.
func (m *Manager) Set(caches []Cache) {
	m.mu.Lock()
	seen := map[string]bool{}
	for _, spec := range caches {
		seen[spec.Name] = true
		spec.Images = slices.Clone(spec.Images)
		fp := fingerprint(spec)
		c := m.caches[spec.Name]
		if c != nil && c.fp == fp {
			continue
		}
		if c == nil {
			c = &cacheRec{evicted: map[string]string{}}
			if s, ok := m.saved[spec.Name]; ok && s.Fingerprint == fp {
				maps.Copy(c.evicted, s.Evicted)
				c.ready = s.Ready
			}
			m.caches[spec.Name] = c
		} else {
			clear(c.evicted)
		}
		c.spec, c.fp = spec, fp
		c.refs = make([]string, len(spec.Images))
		c.invalid = make([]string, len(spec.Images))
		for i, image := range spec.Images {
			key, err := normalize(image)
			if err != nil {
				c.invalid[i] = err.Error()
				continue
			}
			c.refs[i] = key
			rec := m.images[key]
			if rec == nil {
				rec = &imageRec{ref: key, state: StatePending, reason: reasonNotLookedUp}
				m.images[key] = rec
			}
			// A changed cache may bring the credentials a failing pull lacked: try at once.
			rec.attempts, rec.retryAt = 0, time.Time{}
			if rec.state == StateFailed {
				rec.state, rec.reason = StatePending, ""
			}
		}
		m.dirty, m.changed = true, true
	}
	for name := range m.caches {
		if !seen[name] {
			delete(m.caches, name)
			delete(m.over, name)
			m.dirty, m.changed = true, true
			m.log.Info("image cache deleted", "image_cache", name)
		}
	}
	m.setOnce = true
	m.saved = nil
	m.pruneLocked()
	if m.pulling != nil && !m.wantedLocked(m.pulling.ref) {
		m.cancel()
	}
	m.refreshLocked()
	m.mu.Unlock()
	m.notify()
	m.wake()
}

// Touch records that a replica started from image now. It does no I/O: the Run loop saves it.
// An image a cache had evicted is back in that cache (a replica wants it).
func (m *Manager) Touch(image string) {
	key, err := normalize(image)
	if err != nil {
		return
	}
	m.mu.Lock()
	rec := m.images[key]
	if rec == nil {
		m.mu.Unlock()
		return
	}
	rec.lastUsed = m.clk.Now()
	m.dirty = true
	for _, c := range m.listersLocked(key) {
		if _, ok := c.evicted[key]; ok {
			delete(c.evicted, key)
			m.changed = true
			if rec.state == StateReady || rec.state == StatePending {
				rec.known, rec.state, rec.reason = false, StatePending, reasonNotLookedUp
			}
		}
	}
	m.refreshLocked()
	m.mu.Unlock()
	m.notify()
	m.wake()
}

// Cached reports whether some cache holds image Ready, with its status there. The image is
// matched as normalized: "app:v1" is "docker.io/library/app:v1".
func (m *Manager) Cached(image string) (ImageStatus, bool) {
	key, err := normalize(image)
	if err != nil {
		return ImageStatus{}, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.listersLocked(key) {
		i := slices.Index(c.refs, key)
		if st := m.imageStatusLocked(c, i); st.State == StateReady {
			return st, true
		}
	}
	return ImageStatus{}, false
}

// Statuses reports every cache, sorted by name.
func (m *Manager) Statuses() []CacheStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]CacheStatus, 0, len(m.caches))
	for _, name := range slices.Sorted(maps.Keys(m.caches)) {
		out = append(out, m.cacheStatusLocked(name, m.caches[name]))
	}
	return out
}

func (m *Manager) cacheStatusLocked(name string, c *cacheRec) CacheStatus {
	cs := CacheStatus{Name: name, Images: make([]ImageStatus, len(c.refs))}
	unknown := 0
	for i, ref := range c.refs {
		if rec := m.images[ref]; rec != nil && !rec.known {
			unknown++
		}
		st := m.imageStatusLocked(c, i)
		cs.Images[i] = st
		if st.State == StateReady {
			cs.Size += st.Size
			if st.Owned {
				cs.OwnedSize += st.Size
			}
		}
	}
	cs.Phase, cs.Message = summarize(cs.Images, unknown, c.ready, m.over[name])
	return cs
}

func (m *Manager) imageStatusLocked(c *cacheRec, i int) ImageStatus {
	st := ImageStatus{Image: c.spec.Images[i], Ref: c.refs[i]}
	if c.invalid[i] != "" {
		st.State, st.Reason = StateFailed, c.invalid[i]
		return st
	}
	rec := m.images[c.refs[i]]
	if rec == nil { // cannot happen: every listed image has a record
		st.State, st.Reason = StatePending, reasonNotLookedUp
		return st
	}
	st.State, st.Reason = rec.state, rec.reason
	st.ID, st.Digest, st.Size, st.Owned = rec.id, rec.digest, rec.size, rec.owned
	st.PulledAt, st.LastUsed = rec.pulledAt, rec.lastUsed
	st.Attempts = rec.attempts
	switch rec.state {
	case StatePulling:
		st.Current, st.Total = rec.current, rec.total
	case StateFailed:
		st.NextRetry = rec.retryAt
	}
	if why, ok := c.evicted[c.refs[i]]; ok && rec.state != StatePulling {
		st.State, st.Reason = StateEvicted, why
	}
	return st
}

// refreshLocked recomputes the caches' phases, noting a change and a first Ready.
func (m *Manager) refreshLocked() {
	for name, c := range m.caches {
		cs := m.cacheStatusLocked(name, c)
		if cs.Phase != c.phase || cs.Message != c.message {
			if cs.Phase != c.phase {
				m.log.Debug("image cache phase", "image_cache", name, "phase", cs.Phase, "message", cs.Message)
			}
			c.phase, c.message = cs.Phase, cs.Message
			m.changed = true
		}
		if cs.Phase == PhaseReady && !c.ready {
			c.ready = true
			m.dirty = true
		}
	}
}

// pruneLocked forgets the images infera does not own that no cache lists.
func (m *Manager) pruneLocked() {
	if !m.setOnce {
		return
	}
	for key, rec := range m.images {
		if !rec.owned && rec.state != StatePulling && len(m.listersLocked(key)) == 0 {
			delete(m.images, key)
			m.dirty = true
		}
	}
}

// listersLocked are the caches that list ref, by name.
func (m *Manager) listersLocked(ref string) []*cacheRec {
	var out []*cacheRec
	for _, name := range slices.Sorted(maps.Keys(m.caches)) {
		if c := m.caches[name]; slices.Contains(c.refs, ref) {
			out = append(out, c)
		}
	}
	return out
}

// wantedLocked reports whether some cache lists ref and has not evicted it.
func (m *Manager) wantedLocked(ref string) bool {
	for _, c := range m.listersLocked(ref) {
		if _, ok := c.evicted[ref]; !ok {
			return true
		}
	}
	return false
}

// wake asks Run for a pass; it never blocks.
func (m *Manager) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// notify calls OnChange when a status changed.
func (m *Manager) notify() {
	m.mu.Lock()
	changed := m.changed
	m.changed = false
	m.mu.Unlock()
	if changed && m.cfg.OnChange != nil {
		m.cfg.OnChange()
	}
}

type pullResult struct {
	rec *imageRec
	img container.Image
	err error
	ctx context.Context
}

// Run looks up, pulls, evicts and removes images until ctx ends, then stops the pull in
// flight, saves the state and returns once its goroutines have exited. It returns nil, or
// the error of that last save.
func (m *Manager) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tick := m.clk.NewTicker(m.cfg.Interval)
	defer tick.Stop()
	results := make(chan pullResult, 1) // one pull at a time: its send never blocks
	var wg sync.WaitGroup
	var timer clock.Timer
	stopTimer := func() {
		if timer != nil {
			timer.Stop()
			timer = nil
		}
	}
	verify := false
	for {
		next := m.pass(ctx, verify, &wg, results)
		verify = false
		stopTimer()
		if !next.IsZero() {
			timer = m.clk.AfterFunc(max(next.Sub(m.clk.Now()), 0), m.wake)
		}
		select {
		case <-ctx.Done():
			stopTimer()
			m.mu.Lock()
			if m.cancel != nil {
				m.cancel()
			}
			m.mu.Unlock()
			wg.Wait()
			select {
			case r := <-results:
				m.finishPull(r)
			default:
			}
			m.mu.Lock()
			m.dirty = true
			m.mu.Unlock()
			return m.save()
		case <-m.kick:
		case <-tick.C():
			verify = true
		case r := <-results:
			m.finishPull(r)
		}
	}
}

// pass is one round of the loop: look up the images not known (all Ready ones too when
// verify), evict as the policy says, remove what no cache wants, start the next pull, save.
// It returns when a back-off ends (zero: none pending).
func (m *Manager) pass(ctx context.Context, verify bool, wg *sync.WaitGroup, results chan<- pullResult) time.Time {
	m.mu.Lock()
	if !m.setOnce {
		m.mu.Unlock()
		return time.Time{}
	}
	var lookups []*imageRec
	for _, key := range slices.Sorted(maps.Keys(m.images)) {
		rec := m.images[key]
		if rec.state != StatePulling && m.wantedLocked(key) && (!rec.known || (verify && rec.state == StateReady)) {
			lookups = append(lookups, rec)
		}
	}
	m.mu.Unlock()

	type found struct {
		img container.Image
		err error
	}
	res := make([]found, len(lookups))
	for i, rec := range lookups {
		res[i].img, res[i].err = m.cfg.Engine.InspectImage(ctx, rec.ref)
	}
	m.mu.Lock()
	for i, rec := range lookups {
		if m.images[rec.ref] == rec && rec.state != StatePulling && ctx.Err() == nil {
			m.lookedUpLocked(rec, res[i].img, res[i].err)
		}
	}
	m.mu.Unlock()

	if ctx.Err() == nil {
		if users, err := m.cfg.Engine.ImageUsers(ctx); err != nil {
			m.log.Warn("image cache: list containers; eviction skipped", "error", err)
		} else {
			m.evict(ctx, users)
		}
	}

	m.mu.Lock()
	now := m.clk.Now()
	if m.pulling == nil && ctx.Err() == nil {
		if rec := m.nextPullLocked(now); rec != nil {
			m.startPullLocked(ctx, rec, wg, results)
		}
	}
	m.pruneLocked()
	var next time.Time
	for key, rec := range m.images {
		if m.pulling == nil && rec.state == StateFailed && m.wantedLocked(key) && (next.IsZero() || rec.retryAt.Before(next)) {
			next = rec.retryAt
		}
	}
	m.refreshLocked()
	m.mu.Unlock()
	if err := m.save(); err != nil {
		m.log.Error("image cache state not saved", "error", err)
	}
	m.notify()
	return next
}

// lookedUpLocked records what the engine said of rec.
func (m *Manager) lookedUpLocked(rec *imageRec, img container.Image, err error) {
	switch {
	case err == nil:
		if rec.owned && rec.id != "" && rec.id != img.ID {
			// The reference now names another image than the one infera pulled: not infera's.
			m.log.Info("cached image replaced in the engine: no longer owned", "image", rec.ref, "was", rec.id, "now", img.ID)
			rec.owned, rec.pulledAt = false, time.Time{}
		}
		if rec.id != img.ID || rec.size != img.Size || rec.state != StateReady {
			m.dirty, m.changed = true, true
		}
		rec.id, rec.size, rec.digest = img.ID, img.Size, img.DigestRef(rec.ref)
		rec.known, rec.state, rec.reason = true, StateReady, ""
	case errors.Is(err, container.ErrImageNotFound):
		if rec.owned {
			m.log.Info("cached image gone from the engine: pulling it again", "image", rec.ref)
		}
		rec.owned, rec.id, rec.digest, rec.size, rec.pulledAt = false, "", "", 0, time.Time{}
		rec.known, rec.state, rec.reason = true, StatePending, "waiting to be pulled"
		m.dirty, m.changed = true, true
	default:
		// The engine did not answer: looked up again on the next pass.
		if r := reasonNotLookedUp + ": " + err.Error(); rec.reason != r {
			m.log.Warn("image cache: inspect image", "image", rec.ref, "error", err)
			rec.reason, m.changed = r, true
		}
	}
}

// evict applies the policy to every cache, then removes from the engine the images infera
// pulled that no cache wants any more and no container uses.
func (m *Manager) evict(ctx context.Context, users map[string]int) {
	m.mu.Lock()
	now := m.clk.Now()
	var views []cacheView
	for _, name := range slices.Sorted(maps.Keys(m.caches)) {
		c := m.caches[name]
		v := cacheView{
			Name: name, SizeBytes: int64(c.spec.SizeGiB) << 30, SizeGiB: c.spec.SizeGiB,
			Retention: time.Duration(c.spec.RetentionDays) * 24 * time.Hour, Days: c.spec.RetentionDays,
		}
		for _, ref := range c.refs {
			rec := m.images[ref]
			if _, gone := c.evicted[ref]; ref == "" || gone || rec == nil || rec.state != StateReady || slices.ContainsFunc(v.Images, func(im imageView) bool { return im.Ref == ref }) {
				continue
			}
			last := rec.lastUsed
			if last.IsZero() {
				last = rec.pulledAt
			}
			v.Images = append(v.Images, imageView{Ref: ref, Bytes: rec.size, LastUse: last, Owned: rec.owned, InUse: users[rec.id] > 0})
		}
		views = append(views, v)
	}
	p := plan(now, views)
	for _, d := range p.Evict {
		m.caches[d.Cache].evicted[d.Ref] = d.Reason
		m.dirty, m.changed = true, true
		m.log.Info("image evicted from image cache", "image_cache", d.Cache, "image", d.Ref, "reason", d.Reason)
	}
	if !maps.Equal(p.Over, m.over) {
		m.over, m.changed = p.Over, true
	}
	var remove []*imageRec
	for _, key := range slices.Sorted(maps.Keys(m.images)) {
		rec := m.images[key]
		if rec.owned && rec.state != StatePulling && !m.wantedLocked(key) && (rec.id == "" || users[rec.id] == 0) {
			remove = append(remove, rec)
		}
	}
	m.mu.Unlock()

	for _, rec := range remove {
		if ctx.Err() != nil {
			return
		}
		// By reference, not ID: another reference to the same image (a tag some other cache
		// lists, or the user's) keeps it.
		err := m.cfg.Engine.RemoveImage(ctx, rec.ref)
		m.mu.Lock()
		switch {
		case err != nil:
			m.log.Warn("image cache: remove image; retried", "image", rec.ref, "error", err)
		case m.images[rec.ref] == rec:
			m.log.Info("image removed from the engine: no image cache wants it", "image", rec.ref, "size", rec.size)
			if len(m.listersLocked(rec.ref)) == 0 {
				delete(m.images, rec.ref)
			} else {
				rec.owned, rec.id, rec.digest, rec.size, rec.pulledAt = false, "", "", 0, time.Time{}
				rec.known, rec.state, rec.reason = true, StatePending, "waiting to be pulled"
			}
			m.dirty, m.changed = true, true
		}
		m.mu.Unlock()
	}
}

// nextPullLocked is the first image, by cache name and the cache's order, that is wanted, not
// in the engine, and not waiting out a back-off.
func (m *Manager) nextPullLocked(now time.Time) *imageRec {
	for _, name := range slices.Sorted(maps.Keys(m.caches)) {
		c := m.caches[name]
		for _, ref := range c.refs {
			if _, gone := c.evicted[ref]; ref == "" || gone {
				continue
			}
			rec := m.images[ref]
			if rec != nil && rec.known && (rec.state == StatePending || (rec.state == StateFailed && !now.Before(rec.retryAt))) {
				return rec
			}
		}
	}
	return nil
}

func (m *Manager) startPullLocked(ctx context.Context, rec *imageRec, wg *sync.WaitGroup, results chan<- pullResult) {
	// Every cache listing the image lends its pull secrets, caches in name order, each
	// cache's in its CR's order; the first with an entry for the registry wins (AuthFor).
	var secrets [][]byte
	for _, c := range m.listersLocked(rec.ref) {
		secrets = append(secrets, c.spec.PullSecrets...)
	}
	pctx, cancel := context.WithCancel(ctx)
	m.pulling, m.cancel = rec, cancel
	rec.state, rec.reason, rec.current, rec.total = StatePulling, "", 0, 0
	m.changed = true
	ref := rec.ref
	m.log.Debug("pulling image", "image", ref)
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := pullResult{rec: rec, ctx: pctx}
		auth, err := container.AuthFor(ref, secrets)
		if err != nil {
			r.err = fmt.Errorf("pull secrets: %w", err)
		} else {
			r.img, r.err = m.cfg.Engine.Pull(pctx, ref, auth, func(p container.PullProgress) { m.progress(rec, p) })
		}
		results <- r
	}()
}

// progress records a pull's progress; OnChange hears of it at most once a second.
func (m *Manager) progress(rec *imageRec, p container.PullProgress) {
	m.mu.Lock()
	if m.pulling != rec {
		m.mu.Unlock()
		return
	}
	rec.current, rec.total = p.Current, p.Total
	now := m.clk.Now()
	tell := m.lastPro.IsZero() || now.Sub(m.lastPro) >= time.Second
	if tell {
		m.lastPro = now
	}
	m.mu.Unlock()
	if tell && m.cfg.OnChange != nil {
		m.cfg.OnChange()
	}
}

// finishPull records a pull's end.
func (m *Manager) finishPull(r pullResult) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec := r.rec
	if m.pulling == rec {
		m.pulling, m.cancel = nil, nil
	}
	m.changed = true
	rec.current, rec.total = 0, 0
	now := m.clk.Now()
	switch {
	case r.err == nil:
		rec.id, rec.size, rec.digest = r.img.ID, r.img.Size, r.img.DigestRef(rec.ref)
		rec.owned, rec.pulledAt = true, now
		rec.known, rec.state, rec.reason = true, StateReady, ""
		rec.attempts, rec.retryAt = 0, time.Time{}
		m.dirty = true
		m.log.Info("image pulled into image cache", "image", rec.ref, "id", rec.id, "size", rec.size)
		if cur := m.images[rec.ref]; cur == nil {
			// Its record was dropped (no cache lists it): keep it, owned, for the next pass
			// to remove.
			m.images[rec.ref] = rec
		} else if cur != rec {
			cur.id, cur.size, cur.digest, cur.owned, cur.pulledAt = rec.id, rec.size, rec.digest, true, now
			cur.known, cur.state, cur.reason, cur.attempts, cur.retryAt = true, StateReady, "", 0, time.Time{}
		}
	case r.ctx.Err() != nil:
		// Cancelled: no cache wants it any more, or Run is stopping. Look it up afresh.
		rec.known, rec.state, rec.reason = false, StatePending, reasonNotLookedUp
	default:
		rec.attempts++
		rec.retryAt = now.Add(m.cfg.PullBackoff.Delay(rec.attempts))
		rec.state, rec.reason = StateFailed, r.err.Error()
		rec.known = true
		lvl := slog.LevelDebug
		if rec.attempts == 1 {
			lvl = slog.LevelWarn
		}
		m.log.Log(context.Background(), lvl, "image pull failed", "image", rec.ref, "attempts", rec.attempts, "retry_at", rec.retryAt, "error", r.err)
	}
	m.refreshLocked()
}

// save writes the state file when it is behind.
func (m *Manager) save() error {
	m.mu.Lock()
	if !m.dirty {
		m.mu.Unlock()
		return nil
	}
	m.dirty = false
	f := stateFile{Images: []savedImage{}, Caches: []savedCache{}}
	for _, key := range slices.Sorted(maps.Keys(m.images)) {
		rec := m.images[key]
		if !rec.owned && rec.lastUsed.IsZero() {
			continue // nothing to remember: looked up again at start
		}
		f.Images = append(f.Images, savedImage{
			Ref: key, ID: rec.id, Digest: rec.digest, Size: rec.size, Owned: rec.owned,
			PulledAt: rec.pulledAt, LastUsed: rec.lastUsed,
		})
	}
	for _, name := range slices.Sorted(maps.Keys(m.caches)) {
		c := m.caches[name]
		f.Caches = append(f.Caches, savedCache{Name: name, Fingerprint: c.fp, Evicted: maps.Clone(c.evicted), Ready: c.ready})
	}
	for _, name := range slices.Sorted(maps.Keys(m.saved)) { // not Set yet: keep what the last run left
		f.Caches = append(f.Caches, m.saved[name])
	}
	m.mu.Unlock()
	if err := writeState(m.cfg.Dir, f); err != nil {
		m.mu.Lock()
		m.dirty = true
		m.mu.Unlock()
		return err
	}
	return nil
}
