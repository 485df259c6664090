// Package controller is infera up's reconcile loop: it keeps what runs (the gateway's routes and
// revisions, the supervisor's replicas, the scaler's revisions) equal to what the store says
// should run, through reconciler.Compute and reconciler.Resolve.
//
// Two goroutines, both owned by Run:
//
//   - the reconcile loop reacts to store events, supervisor changes (Kick) and a resync timer.
//     A pass is proportional to what changed: the store's objects are decoded once per change
//     (state), and only Services whose objects or observed replicas changed are computed again;
//     a pass where nothing changed reads each revision's replica counts and does nothing else.
//   - the scaling loop (scaling) feeds the gateway's stats to the scaler every second, ticks it
//     every 2 s and handles pokes for revisions at zero; it never waits for a pass.
//
// A revision the reconciler wants active is Running once resolved and started; Pending while it
// waits for something named (reconciler.ErrWaiting: a Secret not applied yet, ...), re-checked
// whenever the store changes and on every resync; or Failed when a user must change something
// (reconciler.ErrUnresolvable, an autoscaling annotation the scaler refuses), re-tried when the
// store changes.
package controller

import (
	"context"
	"errors"
	"fmt"
	"github.com/infera-dev/infera/internal/ack"
	"github.com/infera-dev/infera/internal/manifest"
	"github.com/infera-dev/infera/internal/placement"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/infera-dev/infera/internal/adminapi"
	"github.com/infera-dev/infera/internal/clock"
	"github.com/infera-dev/infera/internal/coldstart"
	"github.com/infera-dev/infera/internal/modelcache"
	"github.com/infera-dev/infera/internal/reconciler"
	"github.com/infera-dev/infera/internal/store"
	"github.com/infera-dev/infera/internal/workload"
)

// Gateway is what the controller needs of the gateway (internal/gateway.Gateway).
type Gateway interface {
	SetRoutes(routes []workload.Route)
	SetRevision(rev workload.Revision)
	RemoveRevision(id workload.RevisionID)
	SetActivatorInPath(id workload.RevisionID, inPath bool)
	Collect(now time.Time) []workload.Stat
}

// Supervisor is what the controller needs of the supervisor (internal/supervisor.Supervisor).
type Supervisor interface {
	Scale(rev workload.Revision, n int)
	Remove(id workload.RevisionID)
	Status(id workload.RevisionID) RevisionStatus
	Replicas() []adminapi.Replica
	Logs(replica string) (io.ReadCloser, error)
}

// RevisionStatus is the supervisor's account of one revision's replicas.
type RevisionStatus struct {
	Ready, Running int
	Failed         bool
	Reason         string // the kubelet's name of a failed start: ErrImagePull, ImagePullBackOff, ...
	Message        string
	ImageDigest    string // the image the replicas run, pinned
	// Unschedulable says why a replica waits for a GPU; Events are its GPU hand-offs.
	Unschedulable string
	Events        []string
}

// Config wires a Controller.
type Config struct {
	Store      *store.Store
	Gateway    Gateway
	Supervisor Supervisor
	Scaler     Scaler
	Resolve    reconciler.ResolveOptions
	// Datasets is the model cache serving Dataset claims; nil: only Datasets of one local://
	// or absolute-path mount resolve, to that path.
	Datasets Datasets
	// ColdStarts assembles cold starts; the scaling loop reports revisions added, pokes and
	// decisions to it, and the revision views show each one's last. nil: none are tracked.
	ColdStarts *coldstart.Tracker
	// ImageCaches pre-pulls ImageCaches' images through the container engine; nil: no engine,
	// and the ImageCaches applied show why they do nothing.
	ImageCaches ImageCaches
	// OnKnativeConfig is called from the reconcile loop with the knative-serving ConfigMaps
	// whenever one of them changes (config-observability's request log, say); nil: nobody.
	OnKnativeConfig func(*manifest.KnativeConfig)
	Logger          *slog.Logger
	Clock           clock.Clock // nil: the real clock
}

// resyncPeriod bounds how long a Pending revision waits for a change that no event signals,
// and how stale a revision's readiness in the store can get.
const resyncPeriod = 5 * time.Second

// Controller turns the store's contents into running revisions and routes.
type Controller struct {
	store   *store.Store
	gw      Gateway
	sup     Supervisor
	opts    reconciler.ResolveOptions
	log     *slog.Logger
	clock   clock.Clock
	scaling *scaling

	datasets  Datasets
	images    ImageCaches
	onKnative func(*manifest.KnativeConfig)

	applyMu sync.Mutex // apply and delete: validate-then-store is atomic against each other
	kick    chan struct{}
	recheck chan struct{}

	// Loop state, touched only by the reconcile goroutine.
	state    *state
	synced   bool
	services map[string]*computed                        // namespace/name -> last computation
	active   map[workload.RevisionID]*servingv1.Revision // what the reconciler wants running
	running  map[workload.RevisionID]workload.Revision
	retiring map[workload.RevisionID]bool
	blocked  map[workload.RevisionID]block // active, but Pending or Failed before they could run
	// unpersisted are services whose last computation could not be written.
	unpersisted map[string]bool
	resolving   []string                         // datasets used by the revision being resolved
	pins        map[workload.RevisionID][]string // datasets pinned by running revisions
	dsModes     datasetModes                     // how running revisions got their datasets

	mu sync.RWMutex // guards view and imageCacheList
	// imageCacheList is the ImageCaches in the store, by name, for the views.
	imageCacheList []*ack.ImageCache
	// policies and pools are the ResourcePolicies and capacity pools, for UnitsFor.
	policies []*ack.ResourcePolicy
	pools    []placement.Pool
	poolsSet bool // pools come from the pools ConfigMap
	view     view
}

// computed is one Service's last reconcile: its outputs and the inputs they came from.
type computed struct {
	service   *servingv1.Service // with status: Service status is not stored, it lives here
	config    *servingv1.Configuration
	revisions []*servingv1.Revision
	route     *workload.Route // nil: no target
	active    []workload.RevisionID
	observed  map[workload.RevisionID]reconciler.Observed
}

// block is why an active revision is not running.
type block struct {
	pending bool   // waiting (reconciler.ErrWaiting); else failed
	reason  string // Knative-style CamelCase reason
	message string
	since   time.Time // pending: when it began waiting for this reason
}

// datasetWait is when a revision blocked by b began waiting for a Dataset; zero when it is not.
func (b block) datasetWait() time.Time {
	if b.pending && b.reason == ReasonDatasetNotReady {
		return b.since
	}
	return time.Time{}
}

// view is what the admin API shows: the last pass's result.
type view struct {
	services []*computed // by namespace/name
	running  map[workload.RevisionID]bool
	runtimes map[workload.RevisionID][2]string // running revisions' runtime and why
	blocked  map[workload.RevisionID]block
}

// New builds a controller; Sync loads the store and Run starts it.
func New(cfg Config) *Controller {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := clock.Or(cfg.Clock)
	ctrl := &Controller{
		store: cfg.Store, gw: cfg.Gateway, sup: cfg.Supervisor, datasets: cfg.Datasets, images: cfg.ImageCaches, onKnative: cfg.OnKnativeConfig,
		opts: cfg.Resolve, log: cfg.Logger, clock: c,
		recheck:  make(chan struct{}, 1),
		pins:     map[workload.RevisionID][]string{},
		scaling:  newScaling(cfg.Scaler, cfg.Gateway, cfg.Supervisor, cfg.ColdStarts, c, cfg.Logger),
		kick:     make(chan struct{}, 1),
		state:    newState(),
		services: map[string]*computed{},
		active:   map[workload.RevisionID]*servingv1.Revision{},
		running:  map[workload.RevisionID]workload.Revision{},
		retiring: map[workload.RevisionID]bool{},
		blocked:  map[workload.RevisionID]block{},
	}
	if cfg.Datasets != nil {
		ctrl.opts.DatasetPath = ctrl.datasetPath
	}
	return ctrl
}

// Kick asks for a reconcile pass soon; it never blocks. The supervisor calls it when a
// replica changes.
func (c *Controller) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Poke reports a request waiting for a revision with no ready replica; it never blocks.
func (c *Controller) Poke(id workload.RevisionID) { c.scaling.poke(id) }

// Sync loads the whole store and runs one pass, so that every stored service has its route
// before the gateway takes its first request. Run calls it when it has not been called.
// It must not be called once Run has started.
func (c *Controller) Sync(ctx context.Context) error {
	ch, err := c.state.load(c.store)
	if err != nil {
		return fmt.Errorf("controller: read state: %w", err)
	}
	c.synced = true
	return c.pass(ctx, ch, true)
}

// Run reconciles until ctx ends. It watches the store, so applies from any client take effect.
// It returns nil when ctx ends, and an error when the store fails; both goroutines have exited
// by then.
func (c *Controller) Run(ctx context.Context) error {
	if !c.synced {
		if err := c.Sync(ctx); err != nil {
			return err
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.scaling.run(ctx) })
	g.Go(func() error { return c.loop(ctx) })
	return g.Wait()
}

func (c *Controller) loop(ctx context.Context) error {
	events, err := c.store.Watch(ctx, c.state.rev)
	if err != nil {
		return c.stopped(ctx, err)
	}
	resync := c.clock.NewTicker(resyncPeriod)
	defer resync.Stop()
	for {
		var ch changes
		resyncing := false
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				// The watcher fell behind: reload everything, then watch from there.
				if ch, err = c.state.load(c.store); err != nil {
					return c.stopped(ctx, err)
				}
				if events, err = c.store.Watch(ctx, c.state.rev); err != nil {
					return c.stopped(ctx, err)
				}
				break
			}
			if err := c.state.event(ev, &ch); err != nil {
				return c.stopped(ctx, err)
			}
			if err := c.drainEvents(ctx, events, ev.Last, &ch); err != nil {
				return c.stopped(ctx, err)
			}
		case <-c.kick:
		case <-c.recheck:
			ch.external = true
		case <-resync.C():
			resyncing = true
		}
		if err := c.pass(ctx, ch, resyncing); err != nil {
			return c.stopped(ctx, err)
		}
	}
}

// stopped is Run's error for err, or nil when ctx ended (the store closes as up stops).
func (c *Controller) stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("controller: %w", err)
}

// drainEvents applies the rest of the Apply ev belongs to (its events arrive one by one) and
// whatever else is queued: one pass sees every Apply whole.
func (c *Controller) drainEvents(ctx context.Context, events <-chan store.Event, last bool, ch *changes) error {
	for {
		var ev store.Event
		var ok bool
		if last {
			select {
			case ev, ok = <-events:
			default:
				return nil
			}
		} else {
			select {
			case ev, ok = <-events:
			case <-ctx.Done():
				return nil
			}
		}
		if !ok {
			return nil // the next receive sees the close and reloads
		}
		if err := c.state.event(ev, ch); err != nil {
			return err
		}
		last = ev.Last
	}
}

// pass is one reconcile. ch says which services the store changed; every other service is
// computed again only if what the supervisor or the resolver observed of its revisions
// changed. Blocked revisions are re-resolved when the store changed or on resync. An error is
// returned only when the store fails.
func (c *Controller) pass(ctx context.Context, ch changes, resync bool) error {
	// Pending revisions are re-resolved when the store changed or on resync (what they wait
	// for may be outside the store); Failed ones only when the store changed.
	retry := func(b block) bool { return ch.any || ch.external || (resync && b.pending) }
	if ch.datasets {
		c.syncDatasets()
	}
	if ch.images {
		c.syncImageCaches()
	}
	if ch.policies || !c.synced {
		c.syncPolicies()
	}
	if ch.knative {
		var data map[string]string
		if kc := c.state.knativeConfig(); kc != nil {
			data = kc.Maps["config-autoscaler"]
		}
		if err := c.scaling.setConfig(data); err != nil {
			c.log.Error("config-autoscaler not applied", "err", err)
		}
		if c.onKnative != nil {
			c.onKnative(c.state.knativeConfig())
		}
	}
	if ch.any {
		c.opts.Images = reconciler.ImageCommands(c.state.ConfigMap(reconciler.ImagesNamespace, reconciler.ImagesConfigMap))
	}

	// Which services to compute: changed in the store, not written last time, or observed
	// differently.
	dirty := ch.services
	for key := range c.unpersisted {
		dirty = mark(dirty, key)
	}
	c.unpersisted = nil
	for key, cs := range c.services {
		if ch.knative || dirty[key] {
			dirty = mark(dirty, key)
			continue
		}
		for id, o := range cs.observed {
			if c.observe(id) != o {
				dirty = mark(dirty, key)
				break
			}
		}
	}
	if len(dirty) == 0 && !((ch.any || ch.external || resync) && len(c.blocked) > 0) && len(c.retiring) == 0 {
		return nil // nothing changed
	}

	domain := c.state.knativeConfig().Domain()
	var puts []store.Object
	var deletes []store.Key
	deltas := make([]delta, 0, len(dirty))
	for _, key := range slices.Sorted(maps.Keys(dirty)) {
		d := delta{old: c.services[key]}
		if svc, ok := c.state.services[key]; ok {
			d.new = c.compute(svc, d.old, domain)
			p, del, err := c.diff(key, d.new)
			if err != nil {
				c.log.Error("reconcile: encode", "service", key, "err", err)
				continue
			}
			puts, deletes = append(puts, p...), append(deletes, del...)
			c.services[key] = d.new
		} else { // deleted: its configuration and revisions go with it
			deletes = append(deletes, c.state.ownedKeys(key)...)
			delete(c.services, key)
			if d.old == nil {
				continue
			}
		}
		deltas = append(deltas, d)
	}
	if err := c.persist(ctx, puts, deletes); err != nil {
		if errors.Is(err, store.ErrClosed) {
			return err
		}
		// Computed but not written: compute those services again on the next pass (resync at
		// the latest), from what the store holds.
		c.log.Error("reconcile: persist", "err", err)
		c.unpersisted = dirty
	}
	c.reconcileDataPlane(deltas, retry)
	c.publish()
	return nil
}

func mark(m map[string]bool, key string) map[string]bool {
	if m == nil {
		m = map[string]bool{}
	}
	m[key] = true
	return m
}

// delta is one service's computation in a pass: before (nil: new) and after (nil: deleted).
type delta struct{ old, new *computed }

// observe is what the reconciler is told of a revision: its replicas, or why it is blocked.
func (c *Controller) observe(id workload.RevisionID) reconciler.Observed {
	if b, ok := c.blocked[id]; ok {
		if b.pending {
			return reconciler.Observed{Pending: true, Reason: b.reason, Message: b.message}
		}
		return reconciler.Observed{Failed: true, Reason: b.reason, Message: b.message}
	}
	st := c.sup.Status(id)
	if st.Unschedulable != "" && st.Ready == 0 && !st.Failed {
		// Placed the moment a GPU frees (or a hand-off makes room): Pending, as the pod of a
		// Knative revision waiting for the scheduler.
		return reconciler.Observed{Pending: true, Reason: "Unschedulable", Message: st.Unschedulable, ImageDigest: st.ImageDigest}
	}
	return reconciler.Observed{Ready: st.Ready, Failed: st.Failed, Reason: st.Reason, Message: st.Message, ImageDigest: st.ImageDigest}
}

// compute runs the reconciler for one service.
func (c *Controller) compute(svc *servingv1.Service, old *computed, domain string) *computed {
	key := nsName(svc.Namespace, svc.Name)
	revs := c.state.serviceRevisions(key)
	in := reconciler.Input{Services: []*servingv1.Service{svc}, Revisions: revs, Domain: domain,
		Observed: make(map[workload.RevisionID]reconciler.Observed, len(revs)+1)}
	if cfg := c.state.configs[key]; cfg != nil {
		in.Configurations = []*servingv1.Configuration{cfg}
	}
	if old != nil {
		// Service status is not stored: carry it from the last pass, so conditions keep their times.
		in.Services = []*servingv1.Service{svc.DeepCopy()}
		in.Services[0].Status = *old.service.Status.DeepCopy()
	}
	for _, r := range revs {
		id := workload.NewRevisionID(r.Namespace, r.Name)
		in.Observed[id] = c.observe(id)
	}
	out := reconciler.Compute(in)
	cs := &computed{service: out.Services[0], config: out.Configurations[0], revisions: out.Revisions, observed: in.Observed}
	for _, r := range out.Revisions { // a revision created in this pass is observed as nothing yet
		id := workload.NewRevisionID(r.Namespace, r.Name)
		if _, ok := cs.observed[id]; !ok {
			cs.observed[id] = c.observe(id)
		}
	}
	if len(out.Routes) > 0 {
		cs.route = &out.Routes[0]
	}
	cs.active = slices.Sorted(maps.Keys(out.Active))
	return cs
}

// revision is the computed Revision object of id.
func (cs *computed) revision(id workload.RevisionID) *servingv1.Revision {
	for _, r := range cs.revisions {
		if workload.NewRevisionID(r.Namespace, r.Name) == id {
			return r
		}
	}
	return nil
}

// reconcileDataPlane starts what should run and has not started, routes, and retires what
// should no longer run, for the services computed in this pass, and re-resolves the blocked
// revisions retry says to.
func (c *Controller) reconcileDataPlane(deltas []delta, retry func(block) bool) {
	var starts, stops []workload.RevisionID
	routesChanged := false
	for _, d := range deltas {
		var oldActive, newActive []workload.RevisionID
		var oldRoute, newRoute *workload.Route
		if d.old != nil {
			oldActive, oldRoute = d.old.active, d.old.route
		}
		if d.new != nil {
			newActive, newRoute = d.new.active, d.new.route
			for _, id := range newActive {
				c.active[id] = d.new.revision(id)
			}
		}
		for _, id := range oldActive {
			if !slices.Contains(newActive, id) {
				delete(c.active, id)
				stops = append(stops, id)
			}
		}
		starts = append(starts, newActive...)
		if !routeEqual(oldRoute, newRoute) {
			routesChanged = true
		}
	}
	for id, b := range c.blocked {
		if retry(b) {
			starts = append(starts, id)
		}
	}
	slices.Sort(starts)
	// New revisions first (the gateway holds requests only for revisions it knows), then routes,
	// then retirements: a revision leaving the route stops getting requests before it stops.
	for _, id := range slices.Compact(starts) {
		delete(c.retiring, id)
		if _, ok := c.running[id]; ok {
			continue
		}
		if b, ok := c.blocked[id]; ok && !retry(b) {
			continue
		}
		c.start(id, c.active[id])
	}
	if routesChanged {
		routes := make([]workload.Route, 0, len(c.services))
		for _, key := range slices.Sorted(maps.Keys(c.services)) {
			if r := c.services[key].route; r != nil {
				routes = append(routes, *r)
			}
		}
		c.gw.SetRoutes(routes)
	}
	for _, id := range stops {
		delete(c.blocked, id)
		if _, ok := c.running[id]; ok {
			c.log.Info("revision retired", "revision", id)
			c.sup.Remove(id)
			c.scaling.remove(id)
			c.unpin(id)
			delete(c.running, id)
			c.retiring[id] = true
		}
	}
	for id := range c.retiring {
		if c.sup.Status(id).Running == 0 {
			c.gw.RemoveRevision(id)
			delete(c.retiring, id)
		}
	}
}

// start resolves and starts one active revision, or records why it cannot run yet.
func (c *Controller) start(id workload.RevisionID, r *servingv1.Revision) {
	if r == nil {
		return
	}
	c.resolving = c.resolving[:0]
	rev, err := reconciler.Resolve(r, c.state, c.opts)
	if err == nil {
		c.gw.SetRevision(rev)
		if err = c.scaling.add(rev, c.blocked[id].datasetWait()); err == nil {
			c.running[id] = rev
			c.pin(id, slices.Clone(c.resolving))
			delete(c.blocked, id)
			d, _ := c.scaling.decision(id)
			c.log.Info("revision started", "revision", id, "desired", d.Desired)
			c.Kick() // its observed state changed: mark it in the store
			return
		}
		c.gw.RemoveRevision(id)
	}
	b := block{reason: "Unresolvable", message: err.Error()}
	var wait *reconciler.WaitError
	if errors.As(err, &wait) {
		b.pending, b.reason = true, wait.Reason
	} else if errors.Is(err, modelcache.ErrUnavailable) {
		b.reason = "DatasetFailed"
	} else if errors.Is(err, reconciler.ErrUnresolvable) {
		b.reason = "Unresolvable"
	} else {
		b.reason = "InvalidAutoscaling"
	}
	old, had := c.blocked[id]
	if b.pending {
		b.since = c.clock.Now()
		if had && old.pending && old.reason == b.reason {
			b.since = old.since
		}
	}
	c.blocked[id] = b
	if had && old == b {
		return
	}
	if b.pending {
		c.log.Info("revision pending", "revision", id, "reason", b.reason, "message", b.message)
	} else {
		c.log.Error("revision cannot run", "revision", id, "err", err)
	}
	c.Kick() // mark it in the store on the next pass
}

func routeEqual(a, b *workload.Route) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Namespace != b.Namespace || a.Service != b.Service || a.Host != b.Host ||
		len(a.Targets) != len(b.Targets) || len(a.Models) != len(b.Models) {
		return false
	}
	for i := range a.Targets {
		if a.Targets[i] != b.Targets[i] {
			return false
		}
	}
	for i := range a.Models {
		if a.Models[i] != b.Models[i] {
			return false
		}
	}
	return true
}
