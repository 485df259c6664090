package platform

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sort"
	"sync"
	"time"

	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

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
	Replicas() []Replica
	Logs(replica string) (io.ReadCloser, error)
}

// RevisionStatus is the supervisor's account of one revision's replicas.
type RevisionStatus struct {
	Ready, Running int
	Failed         bool
	Message        string
}

// Decision is the scaler's answer for one revision.
type Decision struct {
	Desired             int     `json:"desired"`
	DeciderDesired      int     `json:"deciderDesired"` // before bounds and scale-to-zero rules; -1: no data yet
	Panic               bool    `json:"panic"`
	ActivatorInPath     bool    `json:"activatorInPath"`
	ExcessBurstCapacity float64 `json:"excessBurstCapacity"`
	StableConcurrency   float64 `json:"stableConcurrency"`
	PanicConcurrency    float64 `json:"panicConcurrency"`
	Target              float64 `json:"target"`
}

// Scaler decides how many replicas each running revision wants: stats in, desired scale out.
// It is pure: time is an argument and it starts nothing.
type Scaler interface {
	Upsert(now time.Time, rev workload.Revision) (Decision, error)
	Remove(id workload.RevisionID)
	Record(s workload.Stat)
	Tick(now time.Time, ready map[workload.RevisionID]int) map[workload.RevisionID]Decision
	// Poke is called when a request arrives for a revision with no ready replica.
	Poke(now time.Time, id workload.RevisionID) (Decision, bool)
}

// configurableScaler takes config-autoscaler's data as it changes.
type configurableScaler interface {
	SetConfig(now time.Time, data map[string]string) error
}

// Controller turns the store's contents into running revisions and routes. One goroutine (Run)
// does every mutation of the data plane, so passes never interleave.
type Controller struct {
	store  *store.Store
	gw     Gateway
	sup    Supervisor
	scaler Scaler
	opts   reconciler.ResolveOptions
	log    *slog.Logger
	now    func() time.Time

	applyMu sync.Mutex // apply and delete: validate-then-store is atomic against each other
	kick    chan struct{}
	pokes   chan workload.RevisionID

	// Loop state, touched only by Run's goroutine.
	running   map[workload.RevisionID]workload.Revision
	retiring  map[workload.RevisionID]bool
	failed    map[workload.RevisionID]string // resolve or scaler errors
	decisions map[workload.RevisionID]Decision

	mu   sync.RWMutex // guards view
	view view
}

// view is what the admin API shows: the last pass's result.
type view struct {
	services  []*servingv1.Service
	revisions []*servingv1.Revision
	routes    []workload.Route
	decisions map[workload.RevisionID]Decision
	failed    map[workload.RevisionID]string
	passed    bool
}

// ControllerConfig wires a Controller.
type ControllerConfig struct {
	Store      *store.Store
	Gateway    Gateway
	Supervisor Supervisor
	Scaler     Scaler
	Resolve    reconciler.ResolveOptions
	Logger     *slog.Logger
	Now        func() time.Time
}

// NewController builds a controller; Run starts it.
func NewController(cfg ControllerConfig) *Controller {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Controller{
		store: cfg.Store, gw: cfg.Gateway, sup: cfg.Supervisor, scaler: cfg.Scaler,
		opts: cfg.Resolve, log: cfg.Logger, now: cfg.Now,
		kick:      make(chan struct{}, 1),
		pokes:     make(chan workload.RevisionID, 1024),
		running:   map[workload.RevisionID]workload.Revision{},
		retiring:  map[workload.RevisionID]bool{},
		failed:    map[workload.RevisionID]string{},
		decisions: map[workload.RevisionID]Decision{},
	}
}

// Kick asks for a reconcile pass soon; it never blocks.
func (c *Controller) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Poke reports a request waiting for a revision with no ready replica; it never blocks.
func (c *Controller) Poke(id workload.RevisionID) {
	select {
	case c.pokes <- id:
	default:
		c.Kick()
	}
}

// Stats and scaling cadence, as Knative: metrics every second, a decision every 2 s.
const (
	statPeriod = time.Second
	tickPeriod = 2 * time.Second
	// resyncPeriod bounds how stale a revision's readiness in the store can get when no
	// change is signalled.
	resyncPeriod = 5 * time.Second
)

// Run reconciles until ctx ends. It watches the store, so applies from any client take effect.
func (c *Controller) Run(ctx context.Context) error {
	events, err := c.store.Watch(ctx, c.store.Revision())
	if err != nil {
		return err
	}
	stats := time.NewTicker(statPeriod)
	defer stats.Stop()
	resync := time.NewTicker(resyncPeriod)
	defer resync.Stop()
	lastTick := c.now()
	c.pass(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-events:
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				// The watcher fell behind: resubscribe from now; a full pass catches up.
				if events, err = c.store.Watch(ctx, c.store.Revision()); err != nil {
					return err
				}
			}
			c.drainEvents(events)
			clear(c.failed) // what kept a revision from running may have been fixed: try again
			c.pass(ctx)
		case <-c.kick:
			c.pass(ctx)
		case <-resync.C:
			c.pass(ctx)
		case id := <-c.pokes:
			c.poke(id)
		case <-stats.C:
			now := c.now()
			c.collect(now)
			if now.Sub(lastTick) >= tickPeriod-statPeriod/2 {
				lastTick = now
				c.tick(now)
			}
		}
	}
}

// drainEvents swallows events already queued: one pass covers them all.
func (c *Controller) drainEvents(events <-chan store.Event) {
	for {
		select {
		case _, ok := <-events:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

// collect feeds the gateway's per-second stats to the scaler. The gateway reports only seconds
// with traffic; a revision with replicas and no traffic reports zeros, as Knative's
// queue-proxies do every second, so its averages fall and it can scale down.
func (c *Controller) collect(now time.Time) {
	seen := map[workload.RevisionID]bool{}
	for _, s := range c.gw.Collect(now) {
		c.scaler.Record(s)
		seen[s.Revision] = true
	}
	for id := range c.running {
		if !seen[id] && c.sup.Status(id).Running > 0 {
			c.scaler.Record(workload.Stat{Revision: id, Time: now.Truncate(time.Second)})
		}
	}
}

func (c *Controller) poke(id workload.RevisionID) {
	rev, ok := c.running[id]
	if !ok {
		return
	}
	d, changed := c.scaler.Poke(c.now(), id)
	c.log.Debug("poke", "revision", id, "decided", changed, "desired", d.Desired)
	if changed {
		c.decide(id, rev, d)
	}
}

func (c *Controller) tick(now time.Time) {
	ready := make(map[workload.RevisionID]int, len(c.running))
	for id := range c.running {
		ready[id] = c.sup.Status(id).Ready
	}
	for id, d := range c.scaler.Tick(now, ready) {
		if rev, ok := c.running[id]; ok {
			c.decide(id, rev, d)
		}
	}
	c.publish(nil)
}

func (c *Controller) decide(id workload.RevisionID, rev workload.Revision, d Decision) {
	c.decisions[id] = d
	c.gw.SetActivatorInPath(id, d.ActivatorInPath)
	c.sup.Scale(rev, d.Desired)
}

// pass is one reconcile: store -> reconciler -> store (configurations, revisions) and the data
// plane (gateway routes and revisions, supervisor scale).
func (c *Controller) pass(ctx context.Context) {
	snap, err := readSnapshot(c.store)
	if err != nil {
		c.log.Error("reconcile: read state", "err", err)
		return
	}
	observed := map[workload.RevisionID]reconciler.Observed{}
	for _, r := range snap.revisions {
		id := workload.NewRevisionID(r.Namespace, r.Name)
		st := c.sup.Status(id)
		o := reconciler.Observed{Ready: st.Ready, Failed: st.Failed, Message: st.Message}
		if msg, ok := c.failed[id]; ok {
			o.Failed, o.Message = true, msg
		}
		observed[id] = o
	}
	c.mu.RLock()
	for _, prev := range c.view.services { // Service status is not stored: carry it from the last pass
		for _, s := range snap.services {
			if s.Namespace == prev.Namespace && s.Name == prev.Name {
				s.Status = *prev.Status.DeepCopy()
			}
		}
	}
	c.mu.RUnlock()
	out := reconciler.Compute(reconciler.Input{
		Services: snap.services, Configurations: snap.configurations, Revisions: snap.revisions,
		Observed: observed, Domain: snap.knativeConfig().Domain(),
	})
	if err := c.persist(ctx, snap, out); err != nil {
		c.log.Error("reconcile: persist", "err", err)
	}

	if cs, ok := c.scaler.(configurableScaler); ok {
		if err := cs.SetConfig(c.now(), snap.knativeConfig().Maps["config-autoscaler"]); err != nil {
			c.log.Error("config-autoscaler not applied", "err", err)
		}
	}
	c.opts.Images = reconciler.ImageCommands(snap.ConfigMap(reconciler.ImagesNamespace, reconciler.ImagesConfigMap))
	// New revisions first (the gateway holds requests only for revisions it knows), then routes,
	// then retirements: a revision leaving the route stops getting requests before it stops.
	now := c.now()
	for _, r := range out.Revisions {
		id := workload.NewRevisionID(r.Namespace, r.Name)
		if !out.Active[id] {
			continue
		}
		delete(c.retiring, id)
		if _, ok := c.running[id]; ok {
			continue
		}
		if _, ok := c.failed[id]; ok {
			continue
		}
		rev, err := reconciler.Resolve(r, snap, c.opts)
		if err == nil {
			var d Decision
			if d, err = c.scaler.Upsert(now, rev); err == nil {
				c.running[id] = rev
				c.gw.SetRevision(rev)
				c.decide(id, rev, d)
				c.log.Info("revision started", "revision", id, "desired", d.Desired)
				continue
			}
		}
		c.failed[id] = err.Error()
		c.log.Error("revision cannot run", "revision", id, "err", err)
		c.Kick() // mark it failed in the store on the next pass
	}
	c.gw.SetRoutes(out.Routes)
	for id := range c.running {
		if !out.Active[id] {
			c.log.Info("revision retired", "revision", id)
			c.sup.Remove(id)
			c.scaler.Remove(id)
			delete(c.running, id)
			delete(c.decisions, id)
			c.retiring[id] = true
		}
	}
	for id := range c.retiring {
		if c.sup.Status(id).Running == 0 {
			c.gw.RemoveRevision(id)
			delete(c.retiring, id)
		}
	}
	exists := map[workload.RevisionID]bool{}
	for _, r := range out.Revisions {
		exists[workload.NewRevisionID(r.Namespace, r.Name)] = true
	}
	for id := range c.failed {
		if !exists[id] {
			delete(c.failed, id)
		}
	}
	c.publish(&out)
}

// publish updates the admin view.
func (c *Controller) publish(out *reconciler.Output) {
	decisions := make(map[workload.RevisionID]Decision, len(c.decisions))
	for id, d := range c.decisions {
		decisions[id] = d
	}
	failed := make(map[workload.RevisionID]string, len(c.failed))
	for id, m := range c.failed {
		failed[id] = m
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.view.decisions, c.view.failed = decisions, failed
	if out != nil {
		c.view.services, c.view.revisions, c.view.routes, c.view.passed = out.Services, out.Revisions, out.Routes, true
	}
}

// persist writes configurations and revisions that changed and deletes those whose service is
// gone, in one Apply.
func (c *Controller) persist(ctx context.Context, snap *snapshot, out reconciler.Output) error {
	var puts []store.Object
	keep := map[store.Key]bool{}
	add := func(kind, ns, name string, obj any) error {
		k := store.Key{Group: servingGroup, Kind: kind, Namespace: ns, Name: name}
		keep[k] = true
		data, err := json.Marshal(obj)
		if err != nil {
			return err
		}
		if old, ok := snap.stored[k]; ok && bytes.Equal(old.Data, data) {
			return nil
		}
		puts = append(puts, store.Object{Key: k, APIVersion: servingv1.SchemeGroupVersion.String(), Data: data, Source: "reconciler"})
		return nil
	}
	for _, cfg := range out.Configurations {
		if err := add(kindConfiguration, cfg.Namespace, cfg.Name, cfg); err != nil {
			return err
		}
	}
	for _, r := range out.Revisions {
		if err := add(kindRevision, r.Namespace, r.Name, r); err != nil {
			return err
		}
	}
	var deletes []store.Key
	for k := range snap.stored {
		if ownedByReconciler(k) && !keep[k] {
			deletes = append(deletes, k)
		}
	}
	if len(puts) == 0 && len(deletes) == 0 {
		return nil
	}
	sort.Slice(deletes, func(i, j int) bool { return deletes[i].String() < deletes[j].String() })
	for _, p := range puts {
		c.log.Debug("persist", "key", p.Key.String(), "data", string(p.Data))
	}
	_, _, err := c.store.Apply(ctx, puts, deletes)
	return err
}
