// Package dockerrt is the supervisor's "docker" runtime: replicas as containers of their
// image through a Docker Engine API (internal/container), with Kubernetes' pull policies,
// imagePullSecrets, Knative's digest pinning, securityContext and limits, the NVIDIA devices
// the supervisor placed the replica on, and ImageCache images used without a pull.
package dockerrt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/infera-dev/infera/internal/clock"
	"github.com/infera-dev/infera/internal/container"
	"github.com/infera-dev/infera/internal/supervisor"
	"github.com/infera-dev/infera/internal/workload"
)

// ImageCache is what the runtime asks of the ImageCache manager (internal/imagecache).
type ImageCache interface {
	// Cached reports whether some ImageCache holds image, ready.
	Cached(image string) bool
	// Touch records that a replica started from image now.
	Touch(image string)
}

// RuntimeConfig wires a Runtime.
type RuntimeConfig struct {
	Engine *container.Engine
	// StateDir is infera's state directory: every container carries it as a label, so the
	// next infera on the same directory finds what a killed one left.
	StateDir string
	// AllowPrivileged lets securityContext.privileged through; refused otherwise.
	AllowPrivileged bool
	Cache           ImageCache // nil: no ImageCache
	Clock           clock.Clock
	Logger          *slog.Logger
}

// Runtime runs replicas as containers: the supervisor's "docker" runtime.
type Runtime struct {
	cfg   RuntimeConfig
	e     *container.Engine
	clock clock.Clock
	log   *slog.Logger
	pulls singleflight.Group

	mu   sync.Mutex
	pins map[workload.RevisionID]string // the image each revision runs, pinned
}

// NewRuntime makes the docker runtime.
func NewRuntime(cfg RuntimeConfig) (*Runtime, error) {
	if cfg.Engine == nil {
		return nil, errors.New("container: RuntimeConfig.Engine is nil")
	}
	dir, err := filepath.Abs(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	cfg.StateDir = dir
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Runtime{
		cfg: cfg, e: cfg.Engine, clock: clock.Or(cfg.Clock), log: cfg.Logger,
		pins: map[workload.RevisionID]string{},
	}, nil
}

// SetCache sets the ImageCache the runtime consults; call it before any replica starts.
func (rt *Runtime) SetCache(c ImageCache) { rt.cfg.Cache = c }

// RemoveOrphans removes every container that carries this state directory's label: what an
// infera that was killed (SIGKILL, a crash, a power cut) left running. Call it before any
// replica starts. It returns how many it removed.
func (rt *Runtime) RemoveOrphans(ctx context.Context) (int, error) {
	cs, err := rt.e.ListContainers(ctx, map[string]string{container.LabelStateDir: rt.cfg.StateDir})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range cs {
		if err := rt.e.RemoveContainer(ctx, c.ID); err != nil {
			return n, err
		}
		rt.log.Warn("removed a container left by an earlier infera", "container", c.Name, "replica", c.Labels[container.LabelReplica], "revision", c.Labels[container.LabelRevision])
		n++
	}
	return n, nil
}

// PullPolicy is Kubernetes' default imagePullPolicy of an image: Always for ":latest" or no
// tag (a digest pins it: IfNotPresent), IfNotPresent otherwise.
func PullPolicy(image, policy string) string {
	if policy != "" {
		return policy
	}
	if strings.Contains(image, "@") {
		return "IfNotPresent"
	}
	// The tag is after the last ':' that follows the last '/' (a registry port is not a tag).
	last := image[strings.LastIndexByte(image, '/')+1:]
	if _, tag, ok := strings.Cut(last, ":"); ok && tag != "latest" {
		return "IfNotPresent"
	}
	return "Always"
}

// Start pulls the replica's image as its pull policy says, then creates and starts its
// container: host network, the launch's env, binds and limits, labels naming the state
// directory, revision and replica.
func (rt *Runtime) Start(ctx context.Context, l supervisor.Launch) (supervisor.Instance, error) {
	c := l.Revision.Container
	started := rt.clock.Now()
	img, ref, source, err := rt.image(ctx, l)
	if err != nil {
		return nil, err
	}
	pulled := rt.clock.Now().Sub(started)
	spec, err := rt.spec(l, img)
	if err != nil {
		return nil, &supervisor.StartError{Reason: supervisor.ReasonCreateContainerConfigError, Err: err}
	}
	// The supervisor placed the replica (internal/placement): exactly these devices, never all.
	spec.GPUs = l.GPUs
	ctr, err := rt.e.Run(ctx, spec, l.Log)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &supervisor.StartError{Reason: supervisor.ReasonRunContainerError, Err: err}
	}
	if rt.cfg.Cache != nil {
		rt.cfg.Cache.Touch(c.Image)
	}
	inst := &instance{rt: rt, c: ctr, replica: l.Replica, ref: ref, source: source, pullTime: pulled, done: make(chan struct{})}
	go func() {
		<-ctr.Done()
		close(inst.done)
	}()
	return inst, nil
}

// Image sources, as describe shows them.
const (
	SourcePresent = "present" // the engine had it
	SourcePulled  = "pulled"  // pulled for this replica
	SourceCache   = "cache"   // an ImageCache had it
)

// image makes the replica's image present as its pull policy says and returns it with the
// reference that pins it and where it came from. The first replica of a revision pins the
// revision's image; later ones run exactly that.
func (rt *Runtime) image(ctx context.Context, l supervisor.Launch) (container.Image, string, string, error) {
	c := l.Revision.Container
	rt.mu.Lock()
	pin := c.ImageDigest
	if pin == "" {
		pin = rt.pins[l.Revision.ID]
	}
	rt.mu.Unlock()
	ref := c.Image
	if pin != "" {
		ref = pin
	}
	policy := PullPolicy(c.Image, c.ImagePullPolicy)
	cached := c.FromImageCache && rt.cfg.Cache != nil && rt.cfg.Cache.Cached(c.Image)
	if cached || pin != "" {
		// A cached image is used as it is; a pinned one cannot change.
		policy = "IfNotPresent"
	}
	source := SourcePresent
	if cached {
		source = SourceCache
	}
	var img container.Image
	var err error
	if policy != "Always" {
		img, err = rt.e.InspectImage(ctx, ref)
		if err != nil && !errors.Is(err, container.ErrImageNotFound) {
			return container.Image{}, "", "", &supervisor.StartError{Reason: supervisor.ReasonErrImagePull, Err: err}
		}
		if err != nil && policy == "Never" {
			return container.Image{}, "", "", &supervisor.StartError{Reason: "ErrImageNeverPull", Err: fmt.Errorf("container image %q is not present with pull policy of Never", c.Image)}
		}
	}
	if policy == "Always" || err != nil {
		if strings.HasPrefix(ref, "sha256:") {
			// Pinned to a local image ID (an image loaded, not pulled): nothing to pull from.
			return container.Image{}, "", "", &supervisor.StartError{Reason: supervisor.ReasonErrImagePull, Err: fmt.Errorf("image %s (pinned as %s) is no longer in the engine and has no registry digest to pull", c.Image, ref)}
		}
		img, err = rt.pull(ctx, ref, c.PullSecrets, l.Progress)
		if err != nil {
			if ctx.Err() != nil {
				return container.Image{}, "", "", ctx.Err()
			}
			return container.Image{}, "", "", &supervisor.StartError{Reason: supervisor.ReasonErrImagePull, Err: err}
		}
		source = SourcePulled
	}
	if pin == "" {
		pin = img.DigestRef(c.Image)
		rt.mu.Lock()
		if p := rt.pins[l.Revision.ID]; p != "" {
			pin = p // another replica pinned it first; run what it runs
		} else {
			rt.pins[l.Revision.ID] = pin
		}
		rt.mu.Unlock()
		if pin != img.DigestRef(c.Image) {
			if img, err = rt.e.InspectImage(ctx, pin); err != nil {
				return container.Image{}, "", "", &supervisor.StartError{Reason: supervisor.ReasonErrImagePull, Err: err}
			}
		}
	}
	return img, pin, source, nil
}

// pull pulls ref once however many replicas want it at the same time.
func (rt *Runtime) pull(ctx context.Context, ref string, secrets [][]byte, progress func(string)) (container.Image, error) {
	auth, err := container.AuthFor(ref, secrets)
	if err != nil {
		return container.Image{}, err
	}
	v, err, _ := rt.pulls.Do(ref, func() (any, error) {
		rt.log.Info("pulling image", "image", ref)
		start := rt.clock.Now()
		logged := start
		img, err := rt.e.Pull(context.WithoutCancel(ctx), ref, auth, func(p container.PullProgress) {
			msg := pullMessage(ref, p)
			if progress != nil {
				progress(msg)
			}
			if now := rt.clock.Now(); now.Sub(logged) >= pullLogEvery {
				logged = now
				rt.log.Info(msg)
			}
		})
		if err != nil {
			rt.log.Warn("image pull failed", "image", ref, "error", err)
			return container.Image{}, err
		}
		rt.log.Info("image pulled", "image", ref, "id", img.ID, "bytes", img.Size, "seconds", rt.clock.Now().Sub(start).Seconds())
		return img, nil
	})
	if err != nil {
		return container.Image{}, err
	}
	return v.(container.Image), nil
}

// pullLogEvery is how often a pull in progress is logged.
const pullLogEvery = 5 * time.Second

func pullMessage(ref string, p container.PullProgress) string {
	if p.Total > 0 {
		return fmt.Sprintf("pulling image %s: %s of %s (%d layers)", ref, mib(p.Current), mib(p.Total), p.Layers)
	}
	return fmt.Sprintf("pulling image %s: %s", ref, strings.ToLower(p.Status))
}

func mib(n int64) string { return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB" }

// spec is the container of a launch, from the image img.
func (rt *Runtime) spec(l supervisor.Launch, img container.Image) (container.Spec, error) {
	c := l.Revision.Container
	sec := c.Security
	spec := container.Spec{
		Name:       "infera-" + l.Replica,
		Image:      img.ID,
		Entrypoint: l.Command,
		Cmd:        l.Args,
		Env:        l.Env,
		WorkingDir: c.WorkingDir,
		Labels: map[string]string{
			container.LabelStateDir: rt.cfg.StateDir,
			container.LabelRevision: string(l.Revision.ID),
			container.LabelReplica:  l.Replica,
		},
		ReadOnlyRootFS: sec.ReadOnlyRootFilesystem,
		CapAdd:         sec.CapAdd,
		CapDrop:        sec.CapDrop,
		NoNewPrivs:     sec.AllowPrivilegeEscalation != nil && !*sec.AllowPrivilegeEscalation,
		NanoCPUs:       c.Resources.CPULimitMilli * 1e6,
		MemoryBytes:    c.Resources.MemoryLimit,
	}
	if len(spec.Entrypoint) == 0 {
		spec.Entrypoint = nil
	}
	if len(spec.Cmd) == 0 {
		spec.Cmd = nil
	}
	if c.Resources.CPURequestMilli > 0 {
		// The kubelet's shares: 1024 per CPU, at least 2.
		spec.CPUShares = max(c.Resources.CPURequestMilli*1024/1000, 2)
	}
	if sec.Privileged {
		if !rt.cfg.AllowPrivileged {
			return container.Spec{}, errors.New("securityContext.privileged is refused: start infera up with --allow-privileged to run privileged containers")
		}
		spec.Privileged = true
	}
	switch {
	case sec.RunAsUser != nil && sec.RunAsGroup != nil:
		spec.User = fmt.Sprintf("%d:%d", *sec.RunAsUser, *sec.RunAsGroup)
	case sec.RunAsUser != nil:
		spec.User = strconv.FormatInt(*sec.RunAsUser, 10)
	case sec.RunAsGroup != nil:
		// The image's user with this group, as the kubelet does.
		user, _, _ := strings.Cut(img.User, ":")
		spec.User = cmpOr(user, "0") + ":" + strconv.FormatInt(*sec.RunAsGroup, 10)
	}
	if sec.RunAsNonRoot {
		user, _, _ := strings.Cut(cmpOr(spec.User, img.User), ":")
		switch {
		case user == "" || user == "0" || user == "root":
			return container.Spec{}, errors.New("container has runAsNonRoot and image will run as root")
		case !isNumeric(user):
			return container.Spec{}, fmt.Errorf("container has runAsNonRoot and image has non-numeric user (%s), cannot verify user is non-root", user)
		}
	}
	for _, b := range l.Binds {
		if links := linkFarm(b.Source); links != nil {
			// A directory made only of links to host paths (a Dataset of several local
			// mounts): the links would dangle inside the container, so each target is bound
			// where its link is.
			for _, ln := range links {
				spec.Mounts = append(spec.Mounts, container.Mount{Source: ln.target, Target: path.Join(b.Target, ln.rel), ReadOnly: b.ReadOnly})
			}
			continue
		}
		spec.Mounts = append(spec.Mounts, container.Mount{Source: b.Source, Target: b.Target, ReadOnly: b.ReadOnly})
	}
	return spec, nil
}

type farmLink struct{ rel, target string }

// maxFarmEntries bounds the walk of a bind's source in search of a link farm.
const maxFarmEntries = 10000

// linkFarm returns the links of dir when dir holds only directories and symbolic links to
// absolute paths (at least one); nil for anything else, as soon as a file shows that it is.
func linkFarm(dir string) []farmLink {
	var links []farmLink
	n := 0
	farm := true
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if n++; n > maxFarmEntries {
			farm = false
			return filepath.SkipAll
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil || !filepath.IsAbs(target) {
				farm = false
				return filepath.SkipAll
			}
			rel, _ := filepath.Rel(dir, p)
			links = append(links, farmLink{rel: filepath.ToSlash(rel), target: target})
		case d.IsDir():
		default:
			farm = false
			return filepath.SkipAll
		}
		return nil
	})
	if err != nil || !farm {
		return nil
	}
	return links
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func isNumeric(s string) bool {
	_, err := strconv.ParseUint(s, 10, 32)
	return err == nil
}

// instance is one container of a replica.
type instance struct {
	rt       *Runtime
	c        *container.Container
	replica  string
	ref      string
	source   string
	pullTime time.Duration
	done     chan struct{}
}

func (i *instance) PID() int              { return i.c.PID }
func (i *instance) Done() <-chan struct{} { return i.done }
func (i *instance) ExitDesc() string {
	<-i.done
	return i.c.ExitDesc()
}
func (i *instance) Terminate() {
	if err := i.c.Signal(); err != nil {
		i.rt.log.Warn("stop signal", "replica", i.replica, "error", err)
	}
}
func (i *instance) Kill() {
	if err := i.c.Kill(); err != nil {
		i.rt.log.Warn("kill", "replica", i.replica, "error", err)
	}
}

// Exec runs argv in the container through the engine's exec API.
func (i *instance) Exec(ctx context.Context, argv []string, out io.Writer) error {
	code, output, err := i.rt.e.Exec(ctx, i.c.ID, argv)
	_, _ = out.Write(output)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("exit status %d", code)
	}
	return nil
}

func (i *instance) ImageRef() string            { return i.ref }
func (i *instance) ContainerID() string         { return i.c.ID }
func (i *instance) ImageSource() string         { return i.source }
func (i *instance) PullDuration() time.Duration { return i.pullTime }
