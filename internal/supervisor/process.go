package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/infera-dev/infera/internal/workload"
)

// spawner starts every child from one locked OS thread. Pdeathsig fires when the thread that
// forked a child exits, not the process; a goroutine that stays locked to its thread for the
// supervisor's whole life keeps that thread alive exactly as long as it is needed.
type spawner struct {
	reqs chan spawnReq
	done chan struct{}

	mu     sync.RWMutex
	closed bool
}

type spawnReq struct {
	cmd *exec.Cmd
	err chan error
}

func newSpawner() *spawner {
	sp := &spawner{reqs: make(chan spawnReq), done: make(chan struct{})}
	go sp.loop()
	return sp
}

func (sp *spawner) loop() {
	// Never unlocked: when this goroutine returns its thread exits, after every child is gone.
	runtime.LockOSThread()
	defer close(sp.done)
	for req := range sp.reqs {
		req.err <- req.cmd.Start()
	}
}

func (sp *spawner) start(cmd *exec.Cmd) error {
	sp.mu.RLock()
	defer sp.mu.RUnlock()
	if sp.closed {
		return ErrClosed
	}
	ch := make(chan error, 1)
	sp.reqs <- spawnReq{cmd: cmd, err: ch}
	return <-ch
}

func (sp *spawner) close() {
	sp.mu.Lock()
	sp.closed = true
	sp.mu.Unlock()
	close(sp.reqs)
	<-sp.done
}

// sandbox is how a replica's processes are wrapped: bwrap arguments, or env naming volume
// directories when there is no namespace.
type sandbox struct {
	bwrapArgs []string // nil: run directly
	env       []string // INFERA_VOLUME_* with Sandbox "none"
}

// prepareBinds writes a replica's volume files and scratch directories and returns where each
// volume comes from. It runs once per replica: emptyDir content survives restarts.
func (s *Supervisor) prepareBinds(r *replica) ([]Bind, error) {
	var binds []Bind
	for _, v := range r.rev.Volumes {
		src, err := s.volumeSource(r, v)
		if err != nil {
			return nil, fmt.Errorf("volume %q: %w", v.Name, err)
		}
		if !filepath.IsAbs(v.MountPath) {
			return nil, fmt.Errorf("volume %q: mountPath %q is not absolute", v.Name, v.MountPath)
		}
		binds = append(binds, Bind{Volume: v.Name, Source: src, Target: filepath.Clean(v.MountPath), ReadOnly: v.ReadOnly || v.Kind == workload.VolumeFiles})
	}
	// Parents before children, so a volume mounted inside another stays visible.
	sort.SliceStable(binds, func(i, j int) bool {
		return strings.Count(binds[i].Target, "/") < strings.Count(binds[j].Target, "/")
	})
	return binds, nil
}

// sandboxFor decides how a process with these volumes runs: under bwrap with each bind at its
// target, or (Sandbox "none") directly with env naming each volume's directory.
func (s *Supervisor) sandboxFor(binds []Bind) (*sandbox, error) {
	if len(binds) == 0 {
		return &sandbox{}, nil
	}
	sb := &sandbox{}
	if s.cfg.Sandbox == SandboxNone {
		for _, b := range binds {
			sb.env = append(sb.env, volumeEnvName(b.Volume)+"="+b.Source)
		}
		return sb, nil
	}
	if s.bwrap == "" {
		return nil, ErrNoSandbox
	}
	args := []string{"--die-with-parent"}
	if os.Geteuid() != 0 {
		args = append(args, "--unshare-user")
	}
	args = append(args, "--bind", "/", "/", "--dev-bind", "/dev", "/dev", "--proc", "/proc")
	for _, b := range binds {
		flag := "--bind"
		if b.ReadOnly {
			flag = "--ro-bind"
		}
		args = append(args, flag, b.Source, b.Target)
	}
	sb.bwrapArgs = args
	return sb, nil
}

// volumeSource returns the host path that backs a volume (SubPath applied), creating
// per-replica content as needed.
func (s *Supervisor) volumeSource(r *replica, v workload.Volume) (string, error) {
	if v.SubPath != "" && (filepath.IsAbs(v.SubPath) || !filepath.IsLocal(v.SubPath)) {
		return "", fmt.Errorf("subPath %q must be a relative path inside the volume", v.SubPath)
	}
	var base string
	switch v.Kind {
	case workload.VolumeEmptyDir:
		base = filepath.Join(r.dir, "empty", v.Name)
		if err := os.MkdirAll(base, 0o777); err != nil {
			return "", err
		}
		// World-writable as Kubernetes makes an emptyDir, whatever the umask, so a container
		// running as another user can write it; Dir/run (0700) keeps other users of this
		// machine out.
		if err := os.Chmod(base, 0o777); err != nil {
			return "", err
		}
	case workload.VolumeFiles:
		base = filepath.Join(r.dir, "files", v.Name)
		// Kubernetes' defaultMode 0644 (directories 0755), so a container running as another
		// user reads them; Dir/run (0700) keeps other users of this machine out.
		if err := os.MkdirAll(base, 0o755); err != nil {
			return "", err
		}
		for rel, content := range v.Files {
			if !filepath.IsLocal(rel) {
				return "", fmt.Errorf("file %q is not a relative path inside the volume", rel)
			}
			p := filepath.Join(base, rel)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return "", err
			}
			if err := os.WriteFile(p, content, 0o644); err != nil {
				return "", err
			}
			if err := os.Chmod(p, 0o644); err != nil {
				return "", err
			}
		}
	case workload.VolumeHostPath:
		if v.HostPath == "" {
			return "", errors.New("hostPath is empty")
		}
		base = v.HostPath
		if _, err := os.Stat(base); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("unknown volume kind %d", v.Kind)
	}
	if v.SubPath == "" {
		return base, nil
	}
	src := filepath.Join(base, v.SubPath)
	if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) && v.Kind != workload.VolumeFiles {
		// Kubernetes creates a missing subPath directory.
		if err := os.MkdirAll(src, 0o777); err != nil {
			return "", err
		}
	} else if err != nil {
		return "", err
	}
	return src, nil
}

// launchEnv is the environment a replica's program gets from its revision: the container's
// env, then Knative's runtime contract.
func (r *replica) launchEnv() []string {
	env := make([]string, 0, len(r.rev.Container.Env)+4)
	for _, e := range r.rev.Container.Env {
		env = append(env, e.Name+"="+e.Value)
	}
	env = append(env,
		"PORT="+strconv.Itoa(r.port),
		"K_SERVICE="+r.rev.Service,
		"K_CONFIGURATION="+r.rev.Configuration,
		"K_REVISION="+r.rev.Name,
	)
	return dedupEnv(env)
}

// dedupEnv keeps the last value of each name, in first-seen order.
func dedupEnv(env []string) []string {
	idx := map[string]int{}
	out := make([]string, 0, len(env))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

// processRuntime runs replicas as child processes of infera: the "process" runtime.
type processRuntime struct{ s *Supervisor }

// processEnv is a process's environment: infera's own, the launch's, then the sandbox's.
func processEnv(l Launch, sb *sandbox) []string {
	env := os.Environ()
	env = append(env, l.Env...)
	env = append(env, sb.env...)
	return dedupEnv(env)
}

// command builds the exec.Cmd of argv in a sandbox context.
func (rt processRuntime) command(argv []string, wd string, env []string, sb *sandbox) (*exec.Cmd, error) {
	if len(argv) == 0 || argv[0] == "" {
		return nil, errors.New("empty command")
	}
	var cmd *exec.Cmd
	if sb.bwrapArgs != nil {
		args := append([]string{}, sb.bwrapArgs...)
		if wd != "" {
			args = append(args, "--chdir", wd)
		}
		args = append(args, "--")
		args = append(args, argv...)
		cmd = exec.Command(rt.s.bwrap, args...)
	} else {
		cmd = exec.Command(argv[0], argv[1:]...)
		cmd.Dir = wd
	}
	if cmd.Err != nil {
		return nil, cmd.Err
	}
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd, nil
}

// process is one running child and its process group.
type process struct {
	rt      processRuntime
	cmd     *exec.Cmd
	pid     int
	wrapped bool          // bwrap is the group leader
	done    chan struct{} // closed once it exited, its group is killed and its output read
	err     error         // cmd.Wait's error, valid after done
	// for exec probes: the same sandbox, directory and environment
	sb  *sandbox
	wd  string
	env []string
}

// Start starts command + args as the replica's main process, output to its log.
func (rt processRuntime) Start(_ context.Context, l Launch) (Instance, error) {
	s := rt.s
	sb, err := s.sandboxFor(l.Binds)
	if err != nil {
		return nil, err
	}
	argv := append(append([]string{}, l.Command...), l.Args...)
	env := processEnv(l, sb)
	wd := l.Revision.Container.WorkingDir
	cmd, err := rt.command(argv, wd, env, sb)
	if err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdin = nil
	cmd.Stdout, cmd.Stderr = pw, pw
	err = s.spawner.start(cmd)
	pw.Close()
	if err != nil {
		pr.Close()
		return nil, err
	}
	p := &process{rt: rt, cmd: cmd, pid: cmd.Process.Pid, wrapped: sb.bwrapArgs != nil, done: make(chan struct{}), sb: sb, wd: wd, env: env}
	copied := make(chan struct{})
	go func() {
		_, _ = io.Copy(l.Log, pr)
		close(copied)
	}()
	go func() {
		// The container is its main process: what it left behind goes with it. The group is
		// killed while the leader is still a zombie, so its pid cannot have been reused.
		waitExited(p.pid)
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		p.err = cmd.Wait()
		// A descendant that left the group may hold the pipe: read on for a second at most.
		drained, stop := timer(s.clock, time.Second)
		select {
		case <-copied:
		case <-drained:
		}
		stop()
		pr.Close()
		<-copied
		close(p.done)
	}()
	return p, nil
}

func (p *process) PID() int              { return p.pid }
func (p *process) Done() <-chan struct{} { return p.done }
func (p *process) ExitDesc() string      { return p.exitDesc() }
func (p *process) Terminate()            { p.term() }
func (p *process) Kill()                 { p.kill() }

// Exec runs argv in the process's sandbox context, with its directory and environment.
func (p *process) Exec(ctx context.Context, argv []string, out io.Writer) error {
	cmd, err := p.rt.command(argv, p.wd, p.env, p.sb)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 100 * time.Millisecond // os/exec's wall-clock timer, like the probe's timeout
	if err := p.rt.s.spawner.start(cmd); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() {
		waitExited(pid)
		close(exited)
	}()
	select {
	case <-exited:
	case <-ctx.Done():
	}
	// Leftovers of the command (or the whole command, on timeout); the leader is not reaped yet.
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-exited
	err = cmd.Wait()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func (p *process) exitDesc() string {
	<-p.done
	if p.err == nil {
		return "exit status 0"
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.String()
	}
	return p.err.Error()
}

// term sends SIGTERM to the process group; under bwrap to every member but bwrap, which
// would otherwise die and take the app with it (--die-with-parent) before it can shut down.
func (p *process) term() {
	if !p.wrapped {
		_ = syscall.Kill(-p.pid, syscall.SIGTERM)
		return
	}
	for _, pid := range groupMembers(p.pid) {
		if pid != p.pid {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	}
}

func (p *process) kill() {
	_ = syscall.Kill(-p.pid, syscall.SIGKILL)
}

// waitExited blocks until process pid has exited, without reaping it (waitid WNOWAIT).
func waitExited(pid int) {
	var info [128]byte // siginfo_t
	for {
		_, _, errno := syscall.Syscall6(syscall.SYS_WAITID, pP_PID, uintptr(pid),
			uintptr(unsafe.Pointer(&info[0])), syscall.WEXITED|wNOWAIT, 0, 0)
		if errno != syscall.EINTR {
			return
		}
	}
}

const (
	pP_PID  = 1          // idtype_t P_PID
	wNOWAIT = 0x01000000 // WNOWAIT
)

// procEntry is one process of /proc/<pid>/stat: its parent and process group.
type procEntry struct{ pid, ppid, pgrp int }

// processes lists every process on this machine, from /proc.
func processes() []procEntry {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []procEntry
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 {
			continue
		}
		ppid, err1 := strconv.Atoi(f[1])
		pgrp, err2 := strconv.Atoi(f[2])
		if err1 == nil && err2 == nil {
			out = append(out, procEntry{pid, ppid, pgrp})
		}
	}
	return out
}

// groupMembers lists the pids whose process group is pgid.
func groupMembers(pgid int) []int {
	var out []int
	for _, p := range processes() {
		if p.pgrp == pgid {
			out = append(out, p.pid)
		}
	}
	return out
}

// childrenByParent maps each pid on this machine to its children's.
func childrenByParent() map[int][]int {
	out := map[int][]int{}
	for _, p := range processes() {
		out[p.ppid] = append(out[p.ppid], p.pid)
	}
	return out
}

// descendants is pid and every process below it.
func descendants(pid int, children map[int][]int) []int {
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}
