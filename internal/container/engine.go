package container

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/moby/moby/api/pkg/stdcopy"
	mcontainer "github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"
)

// Errors the engine returns; match them with errors.Is.
var (
	// ErrNoEngine: no Docker Engine API answers at the configured host.
	ErrNoEngine = errors.New("no container engine answers")
	// ErrImageNotFound: the engine has no such image locally.
	ErrImageNotFound = errors.New("image not found in the engine")
	// ErrPull: pulling an image failed (registry unreachable, unknown image, denied).
	ErrPull = errors.New("image pull failed")
)

// Labels every container infera starts carries, so an engine's containers can be told apart
// and a container left by an infera that was killed can be found and removed.
const (
	LabelStateDir = "dev.infera.state-dir"
	LabelRevision = "dev.infera.revision"
	LabelReplica  = "dev.infera.replica"
)

// Engine is a Docker Engine API endpoint (dockerd, or Podman's compatible socket).
type Engine struct {
	cli  *client.Client
	host string
}

// Connect reaches the engine named by DOCKER_HOST (and DOCKER_API_VERSION, DOCKER_CERT_PATH,
// DOCKER_TLS_VERIFY), as the docker CLI reads them; unix:///var/run/docker.sock when unset.
// It pings the engine within timeout; an engine that does not answer is ErrNoEngine.
func Connect(ctx context.Context, timeout time.Duration) (*Engine, error) {
	cli, err := client.New(client.FromEnv)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoEngine, err)
	}
	host := cli.DaemonHost()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		cli.Close()
		return nil, fmt.Errorf("%w at %s (DOCKER_HOST): %v", ErrNoEngine, host, err)
	}
	return &Engine{cli: cli, host: host}, nil
}

// Host is the engine's address, e.g. "unix:///var/run/docker.sock".
func (e *Engine) Host() string { return e.host }

// Close releases the client's connections.
func (e *Engine) Close() error { return e.cli.Close() }

// Auth is one registry credential, as a kubernetes.io/dockerconfigjson Secret holds it.
type Auth struct {
	Server   string
	Username string
	Password string
	// IdentityToken is an OAuth refresh token, used instead of the password.
	IdentityToken string
}

// encode is the X-Registry-Auth header the engine reads.
func (a *Auth) encode() (string, error) {
	if a == nil {
		return "", nil
	}
	b, err := json.Marshal(registry.AuthConfig{
		Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken, ServerAddress: a.Server,
	})
	if err != nil {
		return "", err
	}
	return base64.URLEncoding.EncodeToString(b), nil
}

// dockerConfig is the JSON of a .dockerconfigjson (and of ~/.docker/config.json).
type dockerConfig struct {
	Auths map[string]struct {
		Auth          string `json:"auth"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		IdentityToken string `json:"identitytoken"`
	} `json:"auths"`
}

// AuthFor picks the credential for image ref from .dockerconfigjson documents, the first
// document with an entry for the image's registry winning, as the kubelet's keyring does
// with a pod's imagePullSecrets in order. Entries may name the registry as "host",
// "host/path" prefixes or "https://host/v1/"; Docker Hub's "docker.io" also matches
// "index.docker.io". It returns nil when no document has an entry.
func AuthFor(ref string, configs [][]byte) (*Auth, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", ref, err)
	}
	domain := reference.Domain(named)
	repo := domain + "/" + reference.Path(named)
	for i, raw := range configs {
		var cfg dockerConfig
		if err := json.Unmarshal(raw, &cfg); err != nil {
			return nil, fmt.Errorf("pull secret %d: .dockerconfigjson: %w", i+1, err)
		}
		// The longest matching key wins, so "host/team" beats "host".
		best, bestLen := "", -1
		for key := range cfg.Auths {
			k := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://"), "/v1/")
			k = strings.TrimSuffix(k, "/")
			if domain == "docker.io" && (k == "index.docker.io" || strings.HasPrefix(k, "index.docker.io/")) {
				k = "docker.io" + strings.TrimPrefix(k, "index.docker.io")
			}
			if (repo == k || strings.HasPrefix(repo, k+"/")) && len(k) > bestLen {
				best, bestLen = key, len(k)
			}
		}
		if bestLen < 0 {
			continue
		}
		ent := cfg.Auths[best]
		a := &Auth{Server: domain, Username: ent.Username, Password: ent.Password, IdentityToken: ent.IdentityToken}
		if ent.Auth != "" {
			dec, err := base64.StdEncoding.DecodeString(ent.Auth)
			if err != nil {
				return nil, fmt.Errorf("pull secret %d: auth of %q is not base64", i+1, best)
			}
			user, pass, ok := strings.Cut(string(dec), ":")
			if !ok {
				return nil, fmt.Errorf("pull secret %d: auth of %q is not user:password", i+1, best)
			}
			a.Username, a.Password = user, pass
		}
		return a, nil
	}
	return nil, nil
}

// Image is an image the engine holds.
type Image struct {
	ID          string   // the config digest, "sha256:..."
	RepoTags    []string // e.g. "127.0.0.1:5000/app:v1"
	RepoDigests []string // e.g. "127.0.0.1:5000/app@sha256:..."
	Size        int64    // bytes
	Created     time.Time
	User        string // the image's USER, "" for root
}

// DigestRef is the reference that pins the image to what it is now, for an image pulled as
// ref: "repo@sha256:<manifest digest>" when the engine knows the image's manifest digest in
// ref's repository, else the image ID (an image only loaded locally).
func (img Image) DigestRef(ref string) string {
	named, err := reference.ParseNormalizedNamed(ref)
	if err == nil {
		for _, d := range img.RepoDigests {
			dn, err := reference.ParseNormalizedNamed(d)
			if err == nil && dn.Name() == named.Name() {
				return d
			}
		}
	}
	return img.ID
}

// InspectImage looks an image up locally; ErrImageNotFound when the engine lacks it.
func (e *Engine) InspectImage(ctx context.Context, ref string) (Image, error) {
	res, err := e.cli.ImageInspect(ctx, ref)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return Image{}, fmt.Errorf("%w: %s", ErrImageNotFound, ref)
		}
		return Image{}, fmt.Errorf("inspect image %s: %w", ref, err)
	}
	img := Image{ID: res.ID, RepoTags: res.RepoTags, RepoDigests: res.RepoDigests, Size: res.Size}
	if res.Config != nil {
		img.User = res.Config.User
	}
	if t, err := time.Parse(time.RFC3339Nano, res.Created); err == nil {
		img.Created = t
	}
	return img, nil
}

// ListImages lists the engine's images.
func (e *Engine) ListImages(ctx context.Context) ([]Image, error) {
	res, err := e.cli.ImageList(ctx, client.ImageListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	out := make([]Image, 0, len(res.Items))
	for _, s := range res.Items {
		out = append(out, Image{ID: s.ID, RepoTags: s.RepoTags, RepoDigests: s.RepoDigests, Size: s.Size, Created: time.Unix(s.Created, 0)})
	}
	return out, nil
}

// RemoveImage removes an image (by ID or reference) and its untagged parents. An image a
// container uses is not removed: the engine refuses.
func (e *Engine) RemoveImage(ctx context.Context, ref string) error {
	_, err := e.cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{PruneChildren: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove image %s: %w", ref, err)
	}
	return nil
}

// PullProgress is how far a pull is: bytes of the layers being downloaded.
type PullProgress struct {
	Current int64 // bytes downloaded so far
	Total   int64 // bytes of the layers whose size is known
	Layers  int   // layers seen
	Status  string
}

// Pull pulls ref with auth (nil: anonymous) and returns the image. progress (may be nil) is
// called as the engine reports; it must return quickly. A failure wraps ErrPull with the
// engine's message.
func (e *Engine) Pull(ctx context.Context, ref string, auth *Auth, progress func(PullProgress)) (Image, error) {
	enc, err := auth.encode()
	if err != nil {
		return Image{}, err
	}
	resp, err := e.cli.ImagePull(ctx, ref, client.ImagePullOptions{RegistryAuth: enc})
	if err != nil {
		return Image{}, fmt.Errorf("%w: %s: %s", ErrPull, ref, engineMessage(err))
	}
	type layer struct{ cur, total int64 }
	layers := map[string]*layer{}
	var order []string
	for msg, err := range resp.JSONMessages(ctx) {
		if err != nil {
			return Image{}, fmt.Errorf("%w: %s: %s", ErrPull, ref, engineMessage(err))
		}
		if msg.Error != nil {
			return Image{}, fmt.Errorf("%w: %s: %s", ErrPull, ref, msg.Error.Message)
		}
		if msg.ID != "" && msg.Progress != nil && msg.Status == "Downloading" {
			l := layers[msg.ID]
			if l == nil {
				l = &layer{}
				layers[msg.ID] = l
				order = append(order, msg.ID)
			}
			l.cur, l.total = msg.Progress.Current, msg.Progress.Total
		} else if msg.ID != "" && (msg.Status == "Download complete" || msg.Status == "Pull complete" || msg.Status == "Already exists") {
			if l := layers[msg.ID]; l != nil && l.total > 0 {
				l.cur = l.total
			}
		}
		if progress != nil {
			p := PullProgress{Status: msg.Status, Layers: len(order)}
			for _, id := range order {
				p.Current += layers[id].cur
				p.Total += layers[id].total
			}
			progress(p)
		}
	}
	return e.InspectImage(ctx, ref)
}

// engineMessage is the engine's own words for an error, without the client's prefixes.
func engineMessage(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "Error response from daemon: ")
	return s
}

// Mount is a bind of a host path into a container.
type Mount struct {
	Source   string
	Target   string
	ReadOnly bool
}

// Spec is what a container runs.
type Spec struct {
	Name       string // the engine's container name
	Image      string // a reference or an image ID
	Entrypoint []string
	Cmd        []string
	Env        []string // NAME=value
	WorkingDir string
	Labels     map[string]string
	Mounts     []Mount
	// User is "uid", "uid:gid" or empty (the image's USER).
	User           string
	ReadOnlyRootFS bool
	CapAdd         []string
	CapDrop        []string
	Privileged     bool
	NoNewPrivs     bool
	NanoCPUs       int64 // cpu limit in 1e-9 CPUs; 0: none
	CPUShares      int64 // from the cpu request, as the kubelet sets it; 0: the engine's default
	MemoryBytes    int64 // memory limit; 0: none
	// GPUs are NVIDIA device IDs (indices or UUIDs) requested from the engine; never "all".
	GPUs []string
}

// CreateConfig turns a Spec into the engine's create request: host network (the replica binds
// its own loopback port, as a process does), no restart policy (the supervisor restarts).
func (s Spec) CreateConfig() client.ContainerCreateOptions {
	cfg := &mcontainer.Config{
		Image:      s.Image,
		Entrypoint: s.Entrypoint,
		Cmd:        s.Cmd,
		Env:        s.Env,
		WorkingDir: s.WorkingDir,
		Labels:     s.Labels,
		User:       s.User,
	}
	hc := &mcontainer.HostConfig{
		NetworkMode:    network.NetworkHost,
		ReadonlyRootfs: s.ReadOnlyRootFS,
		CapAdd:         s.CapAdd,
		CapDrop:        s.CapDrop,
		Privileged:     s.Privileged,
		Init:           nil,
	}
	if s.NoNewPrivs {
		hc.SecurityOpt = append(hc.SecurityOpt, "no-new-privileges")
	}
	hc.NanoCPUs = s.NanoCPUs
	hc.CPUShares = s.CPUShares
	hc.Memory = s.MemoryBytes
	if len(s.GPUs) > 0 {
		hc.DeviceRequests = []mcontainer.DeviceRequest{{
			Driver: "nvidia", DeviceIDs: append([]string(nil), s.GPUs...), Capabilities: [][]string{{"gpu"}},
		}}
	}
	for _, m := range s.Mounts {
		// A recursive bind with the engine's default (private) propagation: what is mounted at
		// or under the source when the container starts (a Dataset's lazy FUSE mount, say) is
		// seen inside; rslave would also carry later mounts in, but the engine refuses it when
		// the source's mount is private, as / is on many hosts.
		hc.Mounts = append(hc.Mounts, mount.Mount{Type: mount.TypeBind, Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly})
	}
	return client.ContainerCreateOptions{Name: s.Name, Config: cfg, HostConfig: hc}
}

// Container is a started container.
type Container struct {
	e        *Engine
	ID       string
	PID      int
	stopSig  string
	done     chan struct{}
	exitCode int64
	oom      bool
	err      error
	out      sync.WaitGroup
}

// Run creates and starts a container from spec with its stdout and stderr copied, as they
// come, into out (must be safe for one writer). When creating fails because a container of
// the same name exists, that one is removed first (it is a leftover of this replica).
func (e *Engine) Run(ctx context.Context, spec Spec, out io.Writer) (*Container, error) {
	opts := spec.CreateConfig()
	created, err := e.cli.ContainerCreate(ctx, opts)
	if err != nil && cerrdefs.IsConflict(err) && spec.Name != "" {
		_ = e.RemoveContainer(ctx, spec.Name)
		created, err = e.cli.ContainerCreate(ctx, opts)
	}
	if err != nil {
		return nil, fmt.Errorf("create container: %s", engineMessage(err))
	}
	c := &Container{e: e, ID: created.ID, done: make(chan struct{}), stopSig: "SIGTERM"}
	fail := func(err error) (*Container, error) {
		_ = e.RemoveContainer(context.WithoutCancel(ctx), c.ID)
		return nil, err
	}
	att, err := e.cli.ContainerAttach(ctx, c.ID, client.ContainerAttachOptions{Stream: true, Stdout: true, Stderr: true})
	if err != nil {
		return fail(fmt.Errorf("attach container: %s", engineMessage(err)))
	}
	// Registered before the start, so an exit that comes at once is not missed.
	wait := e.cli.ContainerWait(context.WithoutCancel(ctx), c.ID, client.ContainerWaitOptions{Condition: mcontainer.WaitConditionNextExit})
	c.out.Add(1)
	go func() {
		defer c.out.Done()
		_, _ = stdcopy.StdCopy(out, out, att.Reader)
		att.Close()
	}()
	if _, err := e.cli.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
		att.Close()
		c.out.Wait()
		return fail(fmt.Errorf("start container: %s", engineMessage(err)))
	}
	if ins, err := e.cli.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{}); err == nil {
		if ins.Container.State != nil {
			c.PID = ins.Container.State.Pid
		}
		if ins.Container.Config != nil && ins.Container.Config.StopSignal != "" {
			c.stopSig = ins.Container.Config.StopSignal
		}
	}
	go func() {
		select {
		case res := <-wait.Result:
			c.exitCode = res.StatusCode
			if res.Error != nil && res.Error.Message != "" {
				c.err = errors.New(res.Error.Message)
			}
		case err := <-wait.Error:
			c.err = fmt.Errorf("wait: %v", err)
			c.exitCode = -1
		}
		bg := context.Background()
		if ins, err := e.cli.ContainerInspect(bg, c.ID, client.ContainerInspectOptions{}); err == nil && ins.Container.State != nil {
			c.oom = ins.Container.State.OOMKilled
		}
		// The output ends with the container; a stream that hangs is cut after a second.
		copied := make(chan struct{})
		go func() { c.out.Wait(); close(copied) }()
		select {
		case <-copied:
		case <-time.After(time.Second):
			att.Close()
			<-copied
		}
		_ = e.RemoveContainer(bg, c.ID)
		close(c.done)
	}()
	return c, nil
}

// Done is closed once the container has exited, its output is read and it is removed.
func (c *Container) Done() <-chan struct{} { return c.done }

// ExitDesc says how the container ended, as os/exec says it of a process ("exit status 1"),
// with "OOMKilled" when the kernel's OOM killer ended it. Valid after Done.
func (c *Container) ExitDesc() string {
	<-c.done
	switch {
	case c.err != nil:
		return c.err.Error()
	case c.oom:
		return fmt.Sprintf("OOMKilled (exit status %d)", c.exitCode)
	case c.exitCode == 137:
		return "signal: killed (exit status 137)"
	case c.exitCode == 143:
		return "signal: terminated (exit status 143)"
	}
	return "exit status " + strconv.FormatInt(c.exitCode, 10)
}

// Signal sends the container's stop signal (the image's STOPSIGNAL, SIGTERM by default).
func (c *Container) Signal() error { return c.e.kill(c.ID, c.stopSig) }

// Kill sends SIGKILL.
func (c *Container) Kill() error { return c.e.kill(c.ID, "SIGKILL") }

func (e *Engine) kill(id, sig string) error {
	_, err := e.cli.ContainerKill(context.Background(), id, client.ContainerKillOptions{Signal: sig})
	if err != nil && !cerrdefs.IsNotFound(err) && !cerrdefs.IsConflict(err) {
		return fmt.Errorf("signal %s: %s", sig, engineMessage(err))
	}
	return nil
}

// Exec runs argv inside the container and returns its exit code and combined output. When
// ctx ends first the exec's stream is closed and ctx's error returned (the engine cannot
// kill an exec; the process is left to finish on its own, as the kubelet's exec probes are).
func (e *Engine) Exec(ctx context.Context, id string, argv []string) (int, []byte, error) {
	ex, err := e.cli.ExecCreate(ctx, id, client.ExecCreateOptions{Cmd: argv, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return -1, nil, fmt.Errorf("exec: %s", engineMessage(err))
	}
	att, err := e.cli.ExecAttach(ctx, ex.ID, client.ExecAttachOptions{})
	if err != nil {
		return -1, nil, fmt.Errorf("exec: %s", engineMessage(err))
	}
	var buf bytes.Buffer
	copied := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(&buf, &buf, att.Reader)
		copied <- err
	}()
	select {
	case <-ctx.Done():
		att.Close()
		<-copied
		return -1, buf.Bytes(), ctx.Err()
	case <-copied:
		att.Close()
	}
	ins, err := e.cli.ExecInspect(ctx, ex.ID, client.ExecInspectOptions{})
	if err != nil {
		return -1, buf.Bytes(), fmt.Errorf("exec: %s", engineMessage(err))
	}
	return ins.ExitCode, buf.Bytes(), nil
}

// Summary is a container the engine holds.
type Summary struct {
	ID     string
	Name   string
	Image  string
	State  string // "running", "exited", ...
	Labels map[string]string
}

// ListContainers lists every container (running or not) that carries all of labels.
func (e *Engine) ListContainers(ctx context.Context, labels map[string]string) ([]Summary, error) {
	f := make(client.Filters)
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if v := labels[k]; v != "" {
			f.Add("label", k+"="+v)
		} else {
			f.Add("label", k)
		}
	}
	res, err := e.cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		return nil, fmt.Errorf("list containers: %s", engineMessage(err))
	}
	out := make([]Summary, 0, len(res.Items))
	for _, c := range res.Items {
		s := Summary{ID: c.ID, Image: c.Image, State: string(c.State), Labels: c.Labels}
		if len(c.Names) > 0 {
			s.Name = strings.TrimPrefix(c.Names[0], "/")
		}
		out = append(out, s)
	}
	return out, nil
}

// RemoveContainer force-removes a container (killing it when it runs) with its anonymous
// volumes; one already gone is not an error.
func (e *Engine) RemoveContainer(ctx context.Context, id string) error {
	_, err := e.cli.ContainerRemove(ctx, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		if cerrdefs.IsConflict(err) && strings.Contains(err.Error(), "already in progress") {
			return nil
		}
		return fmt.Errorf("remove container %s: %s", id, engineMessage(err))
	}
	return nil
}

// ImageUsers counts, by image ID, the containers (running or not) that use each image.
func (e *Engine) ImageUsers(ctx context.Context) (map[string]int, error) {
	res, err := e.cli.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil {
		return nil, fmt.Errorf("list containers: %s", engineMessage(err))
	}
	out := map[string]int{}
	for _, c := range res.Items {
		out[c.ImageID]++
	}
	return out, nil
}

// DefaultHost is the engine address used when DOCKER_HOST is not set.
func DefaultHost() string {
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		return h
	}
	return client.DefaultDockerHost
}
