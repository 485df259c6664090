package supervisor

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/infera-dev/infera/internal/clock"
	"github.com/infera-dev/infera/internal/placement"
	"github.com/infera-dev/infera/internal/workload"
)

// Errors returned by the supervisor.
var (
	// ErrUnknownReplica: no replica, running or stopped, has that name.
	ErrUnknownReplica = errors.New("supervisor: unknown replica")
	// ErrNoSandbox: a revision has volumes but no mount namespace can be made.
	ErrNoSandbox = errors.New("no mount namespace for volumes: bwrap (bubblewrap) not found; install it or run with --sandbox=none, which puts each volume in a per-replica directory named by env INFERA_VOLUME_<NAME>")
	// ErrClosed: the supervisor has been shut down.
	ErrClosed = errors.New("supervisor: shut down")
)

// Gateway is the part of the gateway the supervisor drives. The supervisor holds no lock while
// it calls these methods, so they may call back into it (SetEndpoints poking an autoscaler
// that calls Scale, say).
type Gateway interface {
	// SetEndpoints replaces the READY replicas of a revision.
	SetEndpoints(id workload.RevisionID, eps []workload.Endpoint)
	// InFlight is the number of requests in flight to a replica.
	InFlight(id workload.RevisionID, replica string) int
	// WaitIdle returns when a replica has no request in flight, or ctx is done.
	WaitIdle(ctx context.Context, id workload.RevisionID, replica string) error
}

// Config is what New needs.
type Config struct {
	Dir     string // state dir: replica logs under Dir/logs/, sandbox scratch under Dir/run/
	Gateway Gateway
	Sandbox string // "auto" (default), "bwrap", "none"
	Logger  *slog.Logger
	// Clock is the time source of every wait and time stamp: back-off, grace periods, probe
	// schedules; nil is clock.Real.
	Clock clock.Clock
	// OnChange is called whenever a replica's state changes, outside the supervisor's locks;
	// it must return quickly (e.g. a non-blocking channel send).
	OnChange func(id workload.RevisionID)
	// OnReplica is called with a replica's status when its process has started and when its
	// readiness probe moved it into or out of Ready, outside the supervisor's locks and before
	// the change is sent to the gateway's endpoints; it must return quickly. Its times
	// (Created, Started, ReadySince) are on Clock.
	OnReplica func(ReplicaStatus)
	// Runtimes start replicas by workload.Container.Runtime; "process" (infera's own child
	// processes) is built in and used when the map has no entry for it.
	Runtimes map[string]Runtime
	// GPUs is the inventory replicas that ask for GPUs (aliyun.com/gpu-mem, gpu-count,
	// nvidia.com/gpu) are placed on; empty: such replicas stay Pending, saying so.
	GPUs []placement.GPU
	// GPUEnforcer adds the env of a GPU memory enforcer (HAMi, MPS) to placed replicas;
	// without one a share is a reservation, as in ACK's share mode.
	GPUEnforcer placement.Enforcer
	// GPUReleased, when set, returns once the memory of reservations given up in a hand-off
	// is free on their devices (NVML reads it) or ctx ends; nil: the replica's exit is
	// enough (a declared inventory).
	GPUReleased func(ctx context.Context, res []placement.Reservation) error
	// Units, when set, says which ResourcePolicy covers a revision: its replicas are placed in
	// the policy's units (and pools) in order, and scale-down empties the last unit first.
	Units        UnitsFunc
	LogBytes     int   // ring buffer per replica; default 1 MiB
	LogFileBytes int64 // a replica's log file rotates at this size; default 10 MiB
}

// Sandbox modes.
const (
	SandboxAuto  = "auto"
	SandboxBwrap = "bwrap"
	SandboxNone  = "none"
)

// Kubelet's numbers for crash back-off and the grace extension after SIGTERM.
const (
	BackoffInitial = 10 * time.Second
	BackoffMax     = 5 * time.Minute
	// BackoffReset: a replica that ran this long since its last restart restarts at once again.
	BackoffReset      = 2 * BackoffMax
	minGraceAfterTerm = 2 * time.Second
)

// MaxStoppedLogs is how many stopped replicas keep their log files; older ones are deleted.
const MaxStoppedLogs = 200

// ReplicaState is where a replica is in its life.
type ReplicaState string

const (
	Starting         ReplicaState = "Starting"
	Ready            ReplicaState = "Ready"
	NotReady         ReplicaState = "NotReady"
	Terminating      ReplicaState = "Terminating"
	CrashLoopBackOff ReplicaState = "CrashLoopBackOff"
	// Pending: no GPU fits the replica yet; it is placed the moment one does.
	Pending ReplicaState = "Pending"
	// ImagePullBackOff: the image could not be pulled; the pull is tried again after the
	// kubelet's image back-off.
	ImagePullBackOff ReplicaState = "ImagePullBackOff"
)

// RevisionStatus is the supervisor's view of a revision.
type RevisionStatus struct {
	Desired int `json:"desired"` // the last Scale
	Actual  int `json:"actual"`  // replicas not terminating
	Live    int `json:"live"`    // every replica not yet gone, terminating ones included
	Ready   int `json:"ready"`   // replicas in state Ready
	// Failed: its replicas exit (or cannot start) and none has ever been ready.
	Failed  bool   `json:"failed"`
	Message string `json:"message,omitempty"` // why it failed, e.g. "exit status 1: <last log line>"
	// Reason is the kubelet's name for a failure to start (ErrImagePull, ImagePullBackOff,
	// CreateContainerConfigError, ...), "" for a program that exits.
	Reason string `json:"reason,omitempty"`
	// ImageDigest is the image the revision's replicas run, pinned by the first one that ran.
	ImageDigest string `json:"imageDigest,omitempty"`
	// Unschedulable says why a replica waits for a GPU ("" when none does).
	Unschedulable string `json:"unschedulable,omitempty"`
	// Events are the GPU hand-offs the revision took part in, oldest first (the last 10).
	Events []string `json:"events,omitempty"`
}

// ReplicaStatus describes one replica.
type ReplicaStatus struct {
	Name       string              `json:"name"`
	Revision   workload.RevisionID `json:"revision"`
	PID        int                 `json:"pid"` // 0 while no process runs
	Port       int                 `json:"port"`
	State      ReplicaState        `json:"state"`
	Restarts   int                 `json:"restarts"`
	Created    time.Time           `json:"created"`
	Started    time.Time           `json:"started"`             // when its current (or last) process started
	ReadySince time.Time           `json:"readySince,omitzero"` // when it last became Ready; zero while not Ready
	LastExit   string              `json:"lastExit,omitempty"`  // e.g. "exit status 1", "signal: killed", or a start error
	LastExitAt time.Time           `json:"lastExitAt"`
	Message    string              `json:"message,omitempty"` // the reason of the last exit, e.g. "liveness probe failed: ..."
	Runtime    string              `json:"runtime"`           // "process", "docker"
	Image      string              `json:"image,omitempty"`   // what it runs, pinned (image runtimes)
	// ImageSource says where the image came from ("present", "pulled", "cache") and
	// ImagePull how long its start spent on it: a cold start's image phase.
	ImageSource string        `json:"imageSource,omitempty"`
	ImagePull   time.Duration `json:"imagePull,omitempty"`
	ImageReady  time.Time     `json:"imageReady,omitzero"` // when the image was present
	Reason      string        `json:"reason,omitempty"`    // the kubelet's name of the last failed start
	Progress    string        `json:"progress,omitempty"`  // what a start in progress does
	// GPUs are the devices the replica holds (indices) and GPUMemory the bytes reserved.
	GPUs      []int `json:"gpus,omitempty"`
	GPUMemory int64 `json:"gpuMemory,omitempty"`
	// Unit is the index of the ResourcePolicy unit it was placed in (-1: none) and Pool the
	// capacity pool of that unit.
	Unit int    `json:"unit"`
	Pool string `json:"pool,omitempty"`
}

// Supervisor runs replicas. Its methods are safe for concurrent use.
type Supervisor struct {
	cfg      Config
	log      *slog.Logger
	clock    clock.Clock
	bwrap    string // path of bwrap; "" when none is used or found
	logsDir  string
	runDir   string
	spawner  *spawner
	probeTr  *http.Transport // HTTP probes
	forceCtx context.Context // cancelled when Shutdown's ctx expires: kill without waiting
	force    context.CancelFunc

	mu     sync.Mutex
	closed bool
	revs   map[workload.RevisionID]*revState
	byName map[string]*replica // live replicas
	wg     sync.WaitGroup
	// stopped names replicas whose log files are kept, oldest first (MaxStoppedLogs).
	stopped []string
	// GPU reservations by replica; gpuFreed is closed (and replaced) when one is given back.
	gpuRes       map[string][]placement.Reservation
	gpuFreed     chan struct{}
	handoffs     []Handoff
	handoffTotal int
	// Endpoint pushes (see changed): generations per revision, what was sent, who flushes.
	lastEPs  map[workload.RevisionID][]workload.Endpoint
	epGen    map[workload.RevisionID]uint64
	epSent   map[workload.RevisionID]uint64
	epDirty  map[workload.RevisionID]bool
	flushing bool
	epCond   *sync.Cond // on mu; broadcast when epSent advances
}

type revState struct {
	rev       workload.Revision
	desired   int
	replicas  []*replica // live replicas in creation order
	everReady bool
	failed    bool
	reason    string
	message   string
	removing  bool
	// imageDigest: what the first replica that ran runs; later ones run the same.
	imageDigest string
	// evicted: replicas stopped by GPU hand-offs and not replaced until demand (Demand) or a
	// lower Scale.
	evicted       int
	unschedulable string // why a replica of it waits for a GPU
}

// New checks the configuration and prepares the state directories.
func New(cfg Config) (*Supervisor, error) {
	if cfg.Dir == "" {
		return nil, errors.New("supervisor: Config.Dir is empty")
	}
	if cfg.Gateway == nil {
		return nil, errors.New("supervisor: Config.Gateway is nil")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Clock = clock.Or(cfg.Clock)
	if cfg.LogBytes <= 0 {
		cfg.LogBytes = 1 << 20
	}
	if cfg.LogFileBytes <= 0 {
		cfg.LogFileBytes = 10 << 20
	}
	if cfg.Sandbox == "" {
		cfg.Sandbox = SandboxAuto
	}
	s := &Supervisor{
		cfg:      cfg,
		log:      cfg.Logger,
		clock:    cfg.Clock,
		logsDir:  filepath.Join(cfg.Dir, "logs"),
		runDir:   filepath.Join(cfg.Dir, "run"),
		revs:     map[workload.RevisionID]*revState{},
		byName:   map[string]*replica{},
		lastEPs:  map[workload.RevisionID][]workload.Endpoint{},
		epGen:    map[workload.RevisionID]uint64{},
		epSent:   map[workload.RevisionID]uint64{},
		epDirty:  map[workload.RevisionID]bool{},
		probeTr:  newProbeTransport(),
		gpuRes:   map[string][]placement.Reservation{},
		gpuFreed: make(chan struct{}),
	}
	s.epCond = sync.NewCond(&s.mu)
	switch cfg.Sandbox {
	case SandboxAuto:
		s.bwrap, _ = exec.LookPath("bwrap")
	case SandboxBwrap:
		p, err := exec.LookPath("bwrap")
		if err != nil {
			return nil, fmt.Errorf("supervisor: sandbox %q: %w", cfg.Sandbox, err)
		}
		s.bwrap = p
	case SandboxNone:
	default:
		return nil, fmt.Errorf("supervisor: unknown sandbox %q (want auto, bwrap or none)", cfg.Sandbox)
	}
	// Scratch of an earlier run (emptyDirs, secret files) belongs to replicas that died with
	// it (Pdeathsig): remove it. One infera owns a state dir at a time (the store locks it).
	if err := os.RemoveAll(s.runDir); err != nil {
		return nil, fmt.Errorf("supervisor: clean %s: %w", s.runDir, err)
	}
	for _, d := range []string{s.logsDir, s.runDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("supervisor: %w", err)
		}
	}
	s.stopped = existingLogs(s.logsDir)
	s.pruneLogsLocked()
	s.forceCtx, s.force = context.WithCancel(context.Background())
	s.spawner = newSpawner()
	return s, nil
}

// Scale sets the desired number of replicas of a revision. The first Scale of an ID records
// the revision; revisions are immutable, so later calls only change the count.
func (s *Supervisor) Scale(rev workload.Revision, n int) {
	if n < 0 {
		n = 0
	}
	// In-flight counts for choosing what to scale down are read with no lock held.
	var ready []string
	s.mu.Lock()
	if rs := s.revs[rev.ID]; rs != nil {
		for _, r := range rs.replicas {
			if !r.stopping && r.state == Ready {
				ready = append(ready, r.name)
			}
		}
		if len(ready) <= n {
			ready = nil // not scaling down
		}
	}
	s.mu.Unlock()
	inFlight := make(map[string]int, len(ready))
	for _, name := range ready {
		inFlight[name] = s.cfg.Gateway.InFlight(rev.ID, name)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	rs := s.revs[rev.ID]
	if rs == nil {
		rs = &revState{rev: rev, imageDigest: rev.Container.ImageDigest}
		s.revs[rev.ID] = rs
	}
	rs.removing = false
	if n < rs.desired {
		rs.evicted = max(0, rs.evicted-(rs.desired-n))
	}
	rs.desired = n
	s.reconcileLocked(rs, inFlight)
	s.mu.Unlock()
	s.changed(rev.ID)
}

// Remove scales a revision to zero and forgets it once its replicas have stopped.
func (s *Supervisor) Remove(id workload.RevisionID) {
	s.mu.Lock()
	rs := s.revs[id]
	if rs == nil {
		s.mu.Unlock()
		return
	}
	rs.desired = 0
	rs.removing = true
	s.reconcileLocked(rs, nil)
	s.forgetIfDoneLocked(rs)
	s.mu.Unlock()
	s.changed(id)
}

// Status reports a revision; the zero value for an unknown one.
func (s *Supervisor) Status(id workload.RevisionID) RevisionStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	rs := s.revs[id]
	if rs == nil {
		return RevisionStatus{}
	}
	st := RevisionStatus{Desired: rs.desired, Failed: rs.failed, Message: rs.message, Reason: rs.reason, ImageDigest: rs.imageDigest, Unschedulable: rs.unschedulable}
	for _, h := range s.handoffs {
		if h.ForRevision == id || slices.Contains(h.From, string(id)) {
			st.Events = append(st.Events, h.At.UTC().Format(time.RFC3339)+" "+h.Message)
		}
	}
	if len(st.Events) > 10 {
		st.Events = st.Events[len(st.Events)-10:]
	}
	st.Live = len(rs.replicas)
	for _, r := range rs.replicas {
		if !r.stopping {
			st.Actual++
		}
		if r.state == Ready {
			st.Ready++
		}
	}
	return st
}

// Replicas lists the live replicas (including terminating ones), by revision then name.
func (s *Supervisor) Replicas() []ReplicaStatus {
	s.mu.Lock()
	out := make([]ReplicaStatus, 0, len(s.byName))
	for _, r := range s.byName {
		out = append(out, r.statusLocked())
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Revision != out[j].Revision {
			return out[i].Revision < out[j].Revision
		}
		return out[i].Name < out[j].Name
	})
	return out
}

var replicaNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`)

// Logs returns the log of a replica, running or stopped: its rotated file, if any, followed by
// the current one.
func (s *Supervisor) Logs(replica string) (io.ReadCloser, error) {
	if !replicaNameRE.MatchString(replica) {
		return nil, fmt.Errorf("%w: %q", ErrUnknownReplica, replica)
	}
	s.mu.Lock()
	r := s.byName[replica]
	s.mu.Unlock()
	if r != nil {
		r.log.flushPartial()
	}
	path := filepath.Join(s.logsDir, replica+".log")
	return openLog(path, replica)
}

// LogTail returns the last bytes (at most Config.LogBytes) a live replica wrote.
func (s *Supervisor) LogTail(replica string) ([]byte, error) {
	s.mu.Lock()
	r := s.byName[replica]
	s.mu.Unlock()
	if r == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownReplica, replica)
	}
	return r.log.tail(), nil
}

// Run waits for ctx to end, then stops every replica gracefully (Shutdown) and returns once
// they and the supervisor's goroutines are gone. Each replica's stop is bounded by its
// revision's timeout plus the kubelet's 2 s, so Run returns in bounded time.
func (s *Supervisor) Run(ctx context.Context) error {
	<-ctx.Done()
	return s.Shutdown(context.WithoutCancel(ctx))
}

// Shutdown stops every replica gracefully and in parallel. When ctx ends first, the remaining
// replicas are killed at once and ctx's error is returned. Scale does nothing afterwards.
func (s *Supervisor) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	first := !s.closed
	s.closed = true
	var ids []workload.RevisionID
	for id, rs := range s.revs {
		rs.desired = 0
		rs.removing = true
		s.reconcileLocked(rs, nil)
		s.forgetIfDoneLocked(rs)
		ids = append(ids, id)
	}
	s.mu.Unlock()
	for _, id := range ids {
		s.changed(id)
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("supervisor: shutdown: %w", ctx.Err())
		s.force()
		<-done
	}
	if first {
		s.force()
		s.spawner.close()
	}
	return err
}

// reconcileLocked starts or stops replicas to reach rs.desired; inFlight (by replica name)
// orders the scale-down.
func (s *Supervisor) reconcileLocked(rs *revState, inFlight map[string]int) {
	var active []*replica
	for _, r := range rs.replicas {
		if !r.stopping {
			active = append(active, r)
		}
	}
	want := max(0, rs.desired-rs.evicted) // replicas a GPU hand-off stopped wait for demand
	for len(active) < want && !s.closed {
		r, err := s.newReplicaLocked(rs)
		if err != nil {
			rs.failed, rs.message = true, err.Error()
			s.log.Error("replica create failed", "revision", string(rs.rev.ID), "error", err)
			return
		}
		active = append(active, r)
	}
	if excess := len(active) - want; excess > 0 {
		for _, r := range pickVictims(active, excess, inFlight, s.unitOrderLocked(active)) {
			s.stopLocked(r)
		}
	}
}

// pickVictims orders replicas for scale-down: not ready first, then idle, then newest.
// Called with s.mu held.
func pickVictims(active []*replica, n int, inFlight map[string]int, unitOrder map[string]int) []*replica {
	type cand struct {
		r        *replica
		ready    bool
		inFlight int
		order    int
	}
	cs := make([]cand, len(active))
	for i, r := range active {
		cs[i] = cand{r: r, ready: r.state == Ready, inFlight: inFlight[r.name], order: i}
	}
	sort.SliceStable(cs, func(i, j int) bool {
		a, b := cs[i], cs[j]
		if a.ready != b.ready {
			return !a.ready
		}
		if unitOrder != nil {
			// Under a ResourcePolicy: the last unit first, the newest first within a unit.
			ia, oka := unitOrder[a.r.name]
			ib, okb := unitOrder[b.r.name]
			if oka && okb && ia != ib {
				return ia < ib
			}
		}
		if (a.inFlight == 0) != (b.inFlight == 0) {
			return a.inFlight == 0
		}
		return a.order > b.order
	})
	out := make([]*replica, 0, n)
	for _, c := range cs[:n] {
		out = append(out, c.r)
	}
	return out
}

func (s *Supervisor) newReplicaLocked(rs *revState) (*replica, error) {
	var name string
	for {
		name = rs.rev.Name + "-" + randSuffix()
		if s.byName[name] == nil && !s.logExists(name) {
			break
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("supervisor: replica of %s: %w", rs.rev.ID, err)
	}
	lg, err := newLogSink(filepath.Join(s.logsDir, name+".log"), s.cfg.LogBytes, s.cfg.LogFileBytes, secretValues(rs.rev))
	if err != nil {
		return nil, fmt.Errorf("supervisor: replica of %s: %w", rs.rev.ID, err)
	}
	r := &replica{
		s:       s,
		name:    name,
		rs:      rs,
		rev:     rs.rev,
		port:    port,
		created: s.clock.Now(),
		state:   Starting,
		stopCh:  make(chan struct{}),
		log:     lg,
		dir:     filepath.Join(s.runDir, name),
		runtime: cmp.Or(rs.rev.Container.Runtime, RuntimeProcess),
		unit:    -1,
	}
	if rs.imageDigest != "" {
		// Every replica after the first runs what the first ran, whatever the tag says now.
		r.rev.Container.ImageDigest = rs.imageDigest
	}
	rs.replicas = append(rs.replicas, r)
	s.byName[name] = r
	s.wg.Add(1)
	go r.run()
	s.log.Info("replica created", "revision", string(rs.rev.ID), "replica", name, "port", port)
	return r, nil
}

func (s *Supervisor) logExists(name string) bool {
	_, err := os.Stat(filepath.Join(s.logsDir, name+".log"))
	return err == nil
}

// stopLocked marks a replica as terminating; its run loop drains and stops it.
func (s *Supervisor) stopLocked(r *replica) {
	if r.stopping {
		return
	}
	r.stopping = true
	r.state = Terminating
	close(r.stopCh)
}

// replicaGone is called by a replica's run loop as its last act.
func (s *Supervisor) replicaGone(r *replica) {
	s.mu.Lock()
	rs := r.rs
	rs.replicas = slices.DeleteFunc(rs.replicas, func(x *replica) bool { return x == r })
	delete(s.byName, r.name)
	s.stopped = append(s.stopped, r.name)
	s.pruneLogsLocked()
	// A replica that left on its own (not stopping) is replaced.
	if !r.stopping {
		s.reconcileLocked(rs, nil)
	}
	s.forgetIfDoneLocked(rs)
	s.mu.Unlock()
	s.changed(rs.rev.ID)
}

// pruneLogsLocked deletes the log files of all but the last MaxStoppedLogs stopped replicas.
func (s *Supervisor) pruneLogsLocked() {
	for len(s.stopped) > MaxStoppedLogs {
		p := filepath.Join(s.logsDir, s.stopped[0]+".log")
		_ = os.Remove(p)
		_ = os.Remove(p + ".1")
		s.stopped = s.stopped[1:]
	}
}

// existingLogs lists the replicas with log files from earlier runs, oldest first.
func existingLogs(dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	type logFile struct {
		name string
		mod  time.Time
	}
	var fs []logFile
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".log")
		if !ok || e.IsDir() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		fs = append(fs, logFile{name, info.ModTime()})
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].mod.Before(fs[j].mod) })
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.name
	}
	return out
}

func (s *Supervisor) forgetIfDoneLocked(rs *revState) {
	if rs.removing && len(rs.replicas) == 0 && s.revs[rs.rev.ID] == rs {
		delete(s.revs, rs.rev.ID)
	}
}

// changed records that a revision's replicas changed, pushes its ready endpoints to the
// gateway when they differ from the last ones sent, and calls OnChange. It returns the
// change's generation (see waitSent). One goroutine at a time flushes, with no lock held
// while the gateway is called, so SetEndpoints may call back into the Supervisor: such a
// nested call is queued and flushed by the outer one, always with the latest state.
func (s *Supervisor) changed(id workload.RevisionID) uint64 {
	s.mu.Lock()
	s.epGen[id]++
	gen := s.epGen[id]
	s.epDirty[id] = true
	if !s.flushing {
		s.flushing = true
		for len(s.epDirty) > 0 {
			var next workload.RevisionID
			for k := range s.epDirty {
				next = k
				break
			}
			delete(s.epDirty, next)
			g, eps, send := s.endpointsLocked(next)
			if send {
				s.mu.Unlock()
				s.cfg.Gateway.SetEndpoints(next, eps)
				s.mu.Lock()
			}
			if s.revs[next] == nil {
				delete(s.epGen, next)
				delete(s.epSent, next)
				delete(s.lastEPs, next)
			} else {
				s.epSent[next] = g
			}
			s.epCond.Broadcast()
		}
		s.flushing = false
	}
	s.mu.Unlock()
	if s.cfg.OnChange != nil {
		s.cfg.OnChange(id)
	}
	return gen
}

// endpointsLocked computes the ready endpoints of a revision and whether they differ from
// the last ones sent.
func (s *Supervisor) endpointsLocked(id workload.RevisionID) (uint64, []workload.Endpoint, bool) {
	var eps []workload.Endpoint
	if rs := s.revs[id]; rs != nil {
		for _, r := range rs.replicas {
			if r.state == Ready {
				eps = append(eps, workload.Endpoint{Replica: r.name, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port))})
			}
		}
	}
	last, sent := s.lastEPs[id]
	if sent && slices.Equal(last, eps) {
		return s.epGen[id], eps, false
	}
	s.lastEPs[id] = eps
	return s.epGen[id], eps, true
}

// waitSent returns once the endpoints of change gen (or a later one) reached the gateway.
func (s *Supervisor) waitSent(id workload.RevisionID, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.revs[id] != nil && s.epSent[id] < gen {
		s.epCond.Wait()
	}
}

func secretValues(rev workload.Revision) []string {
	var out []string
	for _, e := range rev.Container.Env {
		if e.Secret && e.Value != "" {
			out = append(out, e.Value)
		}
	}
	return out
}

// randSuffix is 5 characters from Kubernetes' name alphabet (no vowels, no look-alikes).
func randSuffix() string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	var b [5]byte
	_, _ = rand.Read(b[:])
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:])
}

// freePort asks the kernel for a free loopback port. Another process may take it before the
// replica binds it; the replica then fails and is restarted with the same port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// timer returns a channel that is closed once d has passed on c, and a stop that disarms the
// timer (so that it leaves a fake clock's Pending); d <= 0 has passed already.
func timer(c clock.Clock, d time.Duration) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	if d <= 0 {
		close(ch)
		return ch, func() {}
	}
	t := c.AfterFunc(d, func() { close(ch) })
	return ch, func() { t.Stop() }
}

// sleep waits d on c; it reports false when ctx ended first.
func sleep(ctx context.Context, c clock.Clock, d time.Duration) bool {
	fired, stop := timer(c, d)
	defer stop()
	select {
	case <-ctx.Done():
		return false
	case <-fired:
		return ctx.Err() == nil
	}
}
