package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/infera-dev/infera/internal/clock"
	"github.com/infera-dev/infera/internal/placement"
	"github.com/infera-dev/infera/internal/workload"
)

// replica is one replica and its run loop. Fields below mu-guarded are guarded by s.mu.
type replica struct {
	s       *Supervisor
	name    string
	rs      *revState
	rev     workload.Revision
	port    int
	created time.Time
	stopCh  chan struct{} // closed by stopLocked
	log     *logSink
	dir     string // Dir/run/<replica>

	// guarded by s.mu
	state      ReplicaState
	stopping   bool
	pid        int
	inc        int // incarnation: which process the probes report about
	restarts   int
	started    time.Time
	readySince time.Time // when it last became Ready
	lastExit   string
	lastExitAt time.Time
	message    string

	runtime     string // "process", "docker"
	image       string // what the current (or last) run runs, pinned; "" for processes
	imageSource string
	imagePull   time.Duration
	imageReady  time.Time
	reason      string // kubelet reason of the last failed start (ErrImagePull, ...)
	progress    string // what a start in progress does (pulling an image)
	progressAt  time.Time
	inst        Instance
	gpu         *placement.Placement // the GPUs it holds, kept across restarts
	// policy, unit and pool: the ResourcePolicy unit it was placed in (unit -1: none)
	policy string
	unit   int
	pool   string

	// run-loop only
	bo     backoff
	pullBo backoff
	binds  []Bind
	bound  bool

	grpc grpcConns // the gRPC probes' connections to the current process
}

func (r *replica) statusLocked() ReplicaStatus {
	st := ReplicaStatus{
		Name: r.name, Revision: r.rev.ID, PID: r.pid, Port: r.port, State: r.state,
		Restarts: r.restarts, Created: r.created, Started: r.started,
		LastExit: r.lastExit, LastExitAt: r.lastExitAt, Message: r.message,
		Runtime: r.runtime, Image: r.image, Reason: r.reason, Progress: r.progress,
		ImageSource: r.imageSource, ImagePull: r.imagePull, ImageReady: r.imageReady,
	}
	if r.state == Ready {
		st.ReadySince = r.readySince
	}
	if r.unit >= 0 {
		st.Unit, st.Pool = r.unit, r.pool
	} else {
		st.Unit = -1
	}
	if r.gpu != nil {
		for _, res := range r.gpu.Reservations {
			st.GPUs = append(st.GPUs, res.GPU)
			st.GPUMemory += res.MemoryBytes
		}
	}
	return st
}

// report hands a replica's status to Config.OnReplica; call it with no lock held.
func (s *Supervisor) report(st ReplicaStatus) {
	if s.cfg.OnReplica != nil {
		s.cfg.OnReplica(st)
	}
}

// backoff is kubelet's crash back-off for one container.
type backoff struct {
	set        bool
	delay      time.Duration
	lastUpdate time.Time
}

// next returns how long to wait before restarting after an exit at now, and advances the
// back-off: the first restart, and any restart 10 min or more after the previous one, is
// immediate; then 10 s, doubling up to 5 min.
func (b *backoff) next(now time.Time) time.Duration {
	var wait time.Duration
	if b.set && now.Sub(b.lastUpdate) <= BackoffReset {
		wait = b.delay
		b.delay = min(2*b.delay, BackoffMax)
		b.lastUpdate = now.Add(wait)
	} else {
		b.set = true
		b.delay = BackoffInitial
		b.lastUpdate = now
	}
	return wait
}

// nextPull returns how long to wait before pulling again after a failed pull at now: the
// kubelet's image back-off, 10 s doubling up to 5 min, reset after 10 min without failures.
func (b *backoff) nextPull(now time.Time) time.Duration {
	if b.set && now.Sub(b.lastUpdate) <= BackoffReset {
		b.delay = min(2*b.delay, BackoffMax)
	} else {
		b.set = true
		b.delay = BackoffInitial
	}
	b.lastUpdate = now
	return b.delay
}

// current is the replica's running instance, nil between runs.
func (r *replica) current() Instance {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return r.inst
}

// exitReason says why a process ended when the supervisor ended it.
type exitReason int

const (
	exitSelf     exitReason = iota // it exited on its own
	exitStopped                    // we stopped it for good
	exitLiveness                   // a liveness or startup probe failed
)

func (r *replica) run() {
	s := r.s
	defer s.wg.Done()
	defer func() {
		r.log.close()
		_ = os.RemoveAll(r.dir)
		s.releaseGPUs(r)
		s.replicaGone(r)
		s.log.Info("replica stopped", "revision", string(r.rev.ID), "replica", r.name)
	}()
	for {
		select {
		case <-r.stopCh:
			return
		default:
		}
		reason, exitDesc, msg, kreason := r.runOnce()
		if reason == exitStopped {
			return
		}
		now := s.clock.Now()
		var wait time.Duration
		if kreason == ReasonErrImagePull {
			wait = r.pullBo.nextPull(now)
		} else {
			wait = r.bo.next(now)
		}
		s.mu.Lock()
		r.pid = 0
		r.lastExit, r.lastExitAt, r.message, r.reason, r.progress = exitDesc, now, msg, kreason, ""
		rs := r.rs
		if !rs.everReady {
			rs.failed = true
			rs.reason = kreason
			rs.message = exitDesc
			if msg != "" {
				rs.message += ": " + msg
			}
		}
		if !r.stopping {
			switch {
			case kreason == ReasonErrImagePull:
				r.state = ImagePullBackOff
				if !rs.everReady {
					rs.reason = ReasonImagePullBackOff
				}
			case wait > 0:
				r.state = CrashLoopBackOff
			default:
				r.state = Starting
			}
		}
		s.mu.Unlock()
		s.log.Warn("replica exited", "revision", string(r.rev.ID), "replica", r.name, "exit", exitDesc, "restart_in", wait)
		s.changed(r.rev.ID)
		if wait > 0 {
			restart, stop := timer(s.clock, wait)
			select {
			case <-r.stopCh:
				stop()
				return
			case <-s.forceCtx.Done():
				stop()
				return
			case <-restart:
			}
		}
		s.mu.Lock()
		if r.stopping {
			s.mu.Unlock()
			return
		}
		r.restarts++
		r.state = Starting
		s.mu.Unlock()
		s.changed(r.rev.ID)
	}
}

// runOnce starts the replica's program, probes it and waits for it to end. It returns why it
// ended, a short description of the exit, a message (the probe failure or the last log line)
// and, for a start that failed, the kubelet's reason (ErrImagePull, ...).
func (r *replica) runOnce() (exitReason, string, string, string) {
	s := r.s
	if !r.bound {
		binds, err := s.prepareBinds(r)
		if err != nil {
			return exitSelf, err.Error(), "", ReasonCreateContainerConfigError
		}
		r.binds, r.bound = binds, true
	}
	rt, err := s.runtimeFor(r.rev)
	if err != nil {
		return exitSelf, err.Error(), "", ReasonCreateContainerConfigError
	}
	if s.cfg.Units != nil && r.unit < 0 {
		if pol, key, pools := s.cfg.Units(r.rev); pol != nil && !r.placeUnit(pol, key, pools) {
			return exitStopped, "stopped while waiting for a unit", "", ""
		}
	}
	if req := gpuRequest(r.name, r.rev); !req.Empty() && r.gpu == nil {
		if !r.placeGPUs(req) {
			return exitStopped, "stopped while waiting for a GPU", "", ""
		}
	}
	env := r.launchEnv()
	var devices []string
	if r.gpu != nil {
		env = dedupEnv(append(env, placement.Env(*r.gpu, s.cfg.GPUs, r.runtime == RuntimeProcess, s.cfg.GPUEnforcer)...))
		devices = placement.Devices(*r.gpu, s.cfg.GPUs)
	}
	startCtx, cancelStart := context.WithCancel(s.forceCtx)
	go func() {
		select {
		case <-r.stopCh:
			cancelStart()
		case <-startCtx.Done():
		}
	}()
	startAt := s.clock.Now()
	p, err := rt.Start(startCtx, Launch{
		Replica:  r.name,
		Revision: r.rev,
		Port:     r.port,
		Command:  r.expandArgs(r.rev.Container.Command),
		Args:     r.expandArgs(r.rev.Container.Args),
		Env:      env,
		GPUs:     devices,
		Binds:    r.binds,
		Log:      r.log,
		Progress: r.setProgress,
	})
	stopped := startCtx.Err() != nil
	cancelStart()
	if err != nil {
		desc := fmt.Sprintf("start: %v", err)
		if errors.Is(err, ErrClosed) || stopped {
			return exitStopped, desc, "", ""
		}
		kreason := startReason(err)
		var se *StartError
		if errors.As(err, &se) {
			desc = se.Err.Error() // the reason is reported beside it
		}
		return exitSelf, desc, "", kreason
	}
	s.mu.Lock()
	r.inc++
	inc := r.inc
	r.inst = p
	r.pid = p.PID()
	r.started = s.clock.Now()
	r.progress, r.reason = "", ""
	if ir, ok := p.(ImageRunner); ok {
		r.image, r.imageSource, r.imagePull = ir.ImageRef(), ir.ImageSource(), ir.PullDuration()
		r.imageReady = startAt.Add(r.imagePull)
		if r.rs.imageDigest == "" {
			r.rs.imageDigest = r.image
		}
	}
	if !r.stopping {
		r.state = Starting
	}
	st := r.statusLocked()
	s.mu.Unlock()
	s.log.Info("replica started", "revision", string(r.rev.ID), "replica", r.name, "runtime", r.runtime, "pid", p.PID())
	s.report(st)
	s.changed(r.rev.ID)
	defer func() {
		r.log.flushPartial()
		s.mu.Lock()
		r.inst = nil
		s.mu.Unlock()
	}()

	probeCtx, cancelProbes := context.WithCancel(context.Background())
	failed := make(chan string, 1) // liveness or startup failure
	var probes sync.WaitGroup
	probes.Add(1)
	go func() {
		defer probes.Done()
		r.probe(probeCtx, inc, failed)
	}()
	defer func() {
		cancelProbes()
		probes.Wait()
	}()

	select {
	case <-p.Done():
		cancelProbes()
		r.log.flushPartial()
		return exitSelf, p.ExitDesc(), r.log.lastLine(), ""
	case msg := <-failed:
		s.mu.Lock()
		if r.state == Ready {
			r.state = NotReady
		}
		s.mu.Unlock()
		s.changed(r.rev.ID)
		s.log.Warn("replica unhealthy, restarting", "revision", string(r.rev.ID), "replica", r.name, "reason", msg)
		cancelProbes()
		r.terminate(p, s.clock.Now().Add(r.grace()))
		return exitLiveness, p.ExitDesc(), msg, ""
	case <-r.stopCh:
		cancelProbes()
		r.drainAndTerminate(p)
		return exitStopped, p.ExitDesc(), "", ""
	}
}

func (r *replica) grace() time.Duration {
	if r.rev.Timeout > 0 {
		return r.rev.Timeout
	}
	return workload.DefaultTimeout
}

// drainAndTerminate: the replica is already out of the endpoints; wait for its requests,
// then SIGTERM, then SIGKILL once the grace period is over.
func (r *replica) drainAndTerminate(p Instance) {
	s := r.s
	// The stop's endpoint update may be in another goroutine's flush: wait until the gateway
	// has it, so no new request is routed here once the drain starts.
	s.waitSent(r.rev.ID, s.changed(r.rev.ID))
	deadline := s.clock.Now().Add(r.grace())
	ctx, cancel := clock.WithTimeout(s.forceCtx, s.clock, r.grace())
	go func() {
		// The process may exit while we wait for the gateway; no need to wait on.
		select {
		case <-p.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := s.cfg.Gateway.WaitIdle(ctx, r.rev.ID, r.name); err != nil && ctx.Err() == nil {
		s.log.Warn("wait idle", "revision", string(r.rev.ID), "replica", r.name, "error", err)
	}
	cancel()
	r.terminate(p, deadline)
}

// terminate sends SIGTERM and SIGKILLs at deadline (at least 2 s after SIGTERM).
func (r *replica) terminate(p Instance, deadline time.Time) {
	s := r.s
	select {
	case <-p.Done():
		return
	default:
	}
	p.Terminate()
	kill, stop := timer(s.clock, max(deadline.Sub(s.clock.Now()), minGraceAfterTerm))
	defer stop()
	select {
	case <-p.Done():
		return
	case <-kill:
		s.log.Warn("replica ignored SIGTERM, killing", "revision", string(r.rev.ID), "replica", r.name)
	case <-s.forceCtx.Done():
	}
	p.Kill()
	<-p.Done()
}

// setProgress records what a start in progress does; it is reported at most once a second.
func (r *replica) setProgress(msg string) {
	s := r.s
	s.mu.Lock()
	now := s.clock.Now()
	if r.progress == msg || (r.progress != "" && now.Sub(r.progressAt) < time.Second) {
		r.progress = msg
		s.mu.Unlock()
		return
	}
	r.progress, r.progressAt = msg, now
	s.mu.Unlock()
	s.changed(r.rev.ID)
}

// setReady records a readiness result of incarnation inc.
func (r *replica) setReady(inc int, ready bool) {
	s := r.s
	s.mu.Lock()
	if r.inc != inc || r.stopping || r.pid == 0 {
		s.mu.Unlock()
		return
	}
	want := NotReady
	if ready {
		want = Ready
	} else if r.state == Starting {
		want = Starting
	}
	if r.state == want {
		s.mu.Unlock()
		return
	}
	r.state = want
	if ready {
		r.readySince = s.clock.Now()
	}
	if ready && !r.rs.everReady {
		r.rs.everReady = true
		r.rs.failed, r.rs.message, r.rs.reason = false, "", ""
	}
	st := r.statusLocked()
	s.mu.Unlock()
	s.log.Info("replica readiness", "revision", string(r.rev.ID), "replica", r.name, "state", string(want))
	s.report(st)
	s.changed(r.rev.ID)
}

// volumeEnvName is the env var that names a volume's directory with Sandbox "none".
func volumeEnvName(volume string) string {
	var b strings.Builder
	b.WriteString("INFERA_VOLUME_")
	for _, c := range strings.ToUpper(volume) {
		if (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}
