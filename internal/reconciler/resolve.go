package reconciler

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/infera-dev/infera/internal/fluid"
	"github.com/infera-dev/infera/internal/manifest"
	"github.com/infera-dev/infera/internal/workload"
)

// ErrUnresolvable is wrapped by every error that means the revision itself must change before it
// can run: Knative marks such a revision Failed.
var ErrUnresolvable = errors.New("cannot run revision")

// ErrWaiting is matched, through errors.Is, by every error that means the revision waits for
// something it names: a *WaitError, which errors.As finds, says what. Nothing in the revision
// needs to change; resolving it again after the awaited object is applied can succeed.
var ErrWaiting = errors.New("revision waits")

// WaitError is what a revision waits for: an object it references (and does not mark optional)
// that is not there yet, or that lacks what the revision takes from it. Kubernetes' kubelet
// treats these as CreateContainerConfigError and retries; so does infera.
type WaitError struct {
	Kind      string // the awaited object's kind: Secret, ConfigMap, PersistentVolumeClaim, Dataset
	Namespace string
	Name      string
	// Reason is a CamelCase reason for the revision's conditions, one of the Reason constants.
	Reason string
	// Message says what is missing, for people: `secret "hf" has no key "token"`.
	Message string
}

// Reasons of a WaitError.
const (
	ReasonSecretMissing       = "SecretMissing"
	ReasonSecretKeyMissing    = "SecretKeyMissing"
	ReasonConfigMapMissing    = "ConfigMapMissing"
	ReasonConfigMapKeyMissing = "ConfigMapKeyMissing"
	// ReasonClaimMissing: no PersistentVolumeClaim or Dataset has the claim's name.
	ReasonClaimMissing = "ClaimMissing"
	// ReasonClaimHostPathMissing: the PersistentVolumeClaim names no directory on this machine
	// (manifest.HostPathAnnotation), infera's way of binding it.
	ReasonClaimHostPathMissing = "ClaimHostPathMissing"
)

func (e *WaitError) Error() string { return e.Message }

// Is makes every WaitError match ErrWaiting.
func (e *WaitError) Is(target error) bool { return target == ErrWaiting }

// Objects looks up what a revision refers to, in the revision's namespace.
type Objects interface {
	Secret(namespace, name string) *corev1.Secret
	ConfigMap(namespace, name string) *corev1.ConfigMap
	PersistentVolumeClaim(namespace, name string) *corev1.PersistentVolumeClaim
	Dataset(namespace, name string) *fluid.Dataset
}

// ResolveOptions say how images and claims map onto this machine.
type ResolveOptions struct {
	// Self is the path of the running infera binary: a command "infera" runs it, so a
	// replica can run `infera model-server` whatever the PATH.
	Self string
	// Images maps a container image to the command that runs it here, for containers that
	// name no command (infera runs processes, not images).
	Images map[string][]string
	// DatasetPath returns the local directory that serves a Dataset's claim to the revision
	// rev (whose annotations may choose how: infera.dev/dataset-mode); an error that matches
	// ErrWaiting makes the revision wait, any other fails it. Nil: only Datasets whose mount
	// is local:// or an absolute path (NAS) resolve, to that path.
	DatasetPath func(rev *servingv1.Revision, d *fluid.Dataset) (string, error)
	// Runtime is infera up's --runtime: "auto" (the default when empty), "process" or
	// "docker". A revision's annotation infera.dev/runtime overrides it.
	Runtime string
	// Engine is the container engine's address when one answered at start ("" when none did):
	// auto runs a container with no command there.
	Engine string
}

// RuntimeAnnotation on a revision template picks its runtime: process or docker.
const RuntimeAnnotation = "infera.dev/runtime"

// ImageCacheAnnotation on a revision template makes its replicas use ImageCache images.
const ImageCacheAnnotation = "k8s.aliyun.com/eci-image-cache"

// Runtimes.
const (
	RuntimeAuto    = "auto"
	RuntimeProcess = "process"
	RuntimeDocker  = "docker"
)

// chooseRuntime decides how a revision's container runs, and says why.
func chooseRuntime(rev *servingv1.Revision, c corev1.Container, opts ResolveOptions) (string, string, error) {
	if v, ok := rev.Annotations[RuntimeAnnotation]; ok {
		switch v {
		case RuntimeProcess, RuntimeDocker:
			return v, fmt.Sprintf("annotation %s: %s", RuntimeAnnotation, v), nil
		}
		return "", "", fmt.Errorf("annotation %s: %q is not a runtime (want process or docker)", RuntimeAnnotation, v)
	}
	switch opts.Runtime {
	case RuntimeProcess, RuntimeDocker:
		return opts.Runtime, "infera up --runtime=" + opts.Runtime, nil
	case "", RuntimeAuto:
	default:
		return "", "", fmt.Errorf("runtime %q is not a runtime (want auto, process or docker)", opts.Runtime)
	}
	switch {
	case len(c.Command) > 0:
		return RuntimeProcess, "auto: the container has a command", nil
	case len(opts.Images[c.Image]) > 0:
		return RuntimeProcess, fmt.Sprintf("auto: image mapped to a command in ConfigMap %s/%s", ImagesNamespace, ImagesConfigMap), nil
	case opts.Engine != "":
		return RuntimeDocker, "auto: no command, container engine at " + opts.Engine, nil
	}
	return RuntimeProcess, "auto: no container engine answers", nil
}

// Resolve turns a Knative Revision into what the supervisor runs and the gateway serves:
// references to Secrets and ConfigMaps resolved, claims mapped to local directories, probes
// and timeouts in Knative's defaults. $(VAR) references are left for the supervisor to expand.
//
// An error is one of two kinds, both naming the revision:
//   - it matches ErrWaiting: the revision is pending on an object it references, a *WaitError
//     says which (a missing Secret, ConfigMap or claim, a missing key, a claim with no local
//     directory). Resolve it again when objects change.
//   - it wraps ErrUnresolvable: the revision must change (more than one container, no command,
//     an unsupported volume or downward API field, a Dataset infera cannot serve yet).
//
// A revision that has both kinds of problem gets ErrUnresolvable: waiting would not mend it.
func Resolve(rev *servingv1.Revision, objs Objects, opts ResolveOptions) (workload.Revision, error) {
	fail := func(err error) (workload.Revision, error) {
		if errors.Is(err, ErrWaiting) {
			return workload.Revision{}, fmt.Errorf("revision %s/%s waits: %w", rev.Namespace, rev.Name, err)
		}
		return workload.Revision{}, fmt.Errorf("%w %s/%s: %w", ErrUnresolvable, rev.Namespace, rev.Name, err)
	}
	spec := rev.Spec
	if len(spec.Containers) != 1 {
		return fail(fmt.Errorf("infera runs single-container revisions; this one has %d containers", len(spec.Containers)))
	}
	c := spec.Containers[0]
	out := workload.Revision{
		ID:                   workload.NewRevisionID(rev.Namespace, rev.Name),
		Namespace:            rev.Namespace,
		Service:              rev.Labels[labelService],
		Configuration:        rev.Labels[labelConfiguration],
		Name:                 rev.Name,
		ContainerConcurrency: int(spec.GetContainerConcurrency()),
		Timeout:              seconds(spec.TimeoutSeconds, workload.DefaultTimeout),
		ResponseStartTimeout: seconds(spec.ResponseStartTimeoutSeconds, 0),
		IdleTimeout:          seconds(spec.IdleTimeoutSeconds, 0),
		Annotations:          rev.Annotations,
		Labels:               rev.Labels,
	}
	fmt.Sscan(rev.Labels[labelConfigGen], &out.Generation)

	runtime, why, err := chooseRuntime(rev, c, opts)
	if err != nil {
		return fail(err)
	}
	if runtime == RuntimeDocker {
		if opts.Engine == "" {
			return fail(fmt.Errorf("the revision runs as a container (%s) but no container engine answered when infera started: start dockerd (or Podman's socket) and set DOCKER_HOST, or run it as a process with a command", why))
		}
		// The image's entrypoint and cmd unless the container overrides them, as in Kubernetes.
		out.Container = workload.Container{
			Name: c.Name, Image: c.Image, Command: slices.Clone(c.Command), Args: slices.Clone(c.Args), WorkingDir: c.WorkingDir,
		}
	} else {
		cmd := append(append([]string(nil), c.Command...), c.Args...)
		if len(c.Command) == 0 {
			mapped := opts.Images[c.Image]
			if len(mapped) == 0 {
				hint := ""
				if opts.Engine == "" {
					hint = "; or start a container engine (dockerd) so that infera runs the image itself"
				}
				return fail(fmt.Errorf("container %q has no command and image %q has no command mapping: add `command:` to the container, or map the image in ConfigMap %s/%s (key: the image, value: the command line)%s", c.Name, c.Image, ImagesNamespace, ImagesConfigMap, hint))
			}
			cmd = append(append([]string(nil), mapped...), c.Args...)
		}
		if cmd[0] == "infera" && opts.Self != "" {
			cmd[0] = opts.Self
		}
		out.Container = workload.Container{
			Name: c.Name, Image: c.Image, Command: cmd[:1], Args: cmd[1:], WorkingDir: c.WorkingDir,
		}
	}
	out.Container.Runtime, out.Container.RuntimeReason = runtime, why
	out.Container.ImagePullPolicy = string(c.ImagePullPolicy)
	out.Container.FromImageCache = rev.Annotations[ImageCacheAnnotation] == "true"
	if len(rev.Status.ContainerStatuses) > 0 {
		if d := rev.Status.ContainerStatuses[0].ImageDigest; strings.Contains(d, "@sha256:") || strings.HasPrefix(d, "sha256:") {
			out.Container.ImageDigest = d
		}
	}
	out.Container.Resources = resources(c.Resources)
	out.Container.Security = security(rev.Spec.SecurityContext, c.SecurityContext)
	if q, ok := c.Resources.Limits["nvidia.com/gpu"]; ok {
		out.Container.GPUs = int(q.Value())
	}
	if q, ok := c.Resources.Limits["aliyun.com/gpu-count"]; ok {
		out.Container.GPUCount = int(q.Value())
	}
	if len(c.Ports) > 0 {
		out.Container.Port = c.Ports[0].ContainerPort
		out.Container.PortName = c.Ports[0].Name
	}
	if q, ok := c.Resources.Limits[manifest.GPUMemResource]; ok {
		out.Container.GPUMemGiB = int(q.Value())
	}

	out.Container.ReadinessProbe = probe(c.ReadinessProbe, true)
	out.Container.LivenessProbe = probe(c.LivenessProbe, false)
	out.Container.StartupProbe = probe(c.StartupProbe, false)

	r := &resolver{ns: rev.Namespace, rev: rev, objs: objs, opts: opts}
	out.Container.Env = r.env(rev, c)
	out.Volumes = r.volumes(rev, c)
	if runtime == RuntimeDocker {
		out.Container.PullSecrets = r.pullSecrets(rev)
	}
	if err := r.err(); err != nil {
		return fail(err)
	}
	return out, nil
}

// resolver resolves one revision's references, keeping the first problem of each kind.
type resolver struct {
	ns   string
	rev  *servingv1.Revision
	objs Objects
	opts ResolveOptions
	wait error // the first thing the revision waits for
	fail error // the first thing in the revision that must change
}

func (r *resolver) problem(err error) {
	switch {
	case errors.Is(err, ErrWaiting):
		if r.wait == nil {
			r.wait = err
		}
	case r.fail == nil:
		r.fail = err
	}
}

// err is the revision's problem, a failure before a wait: waiting cannot mend a failure.
func (r *resolver) err() error {
	if r.fail != nil {
		return r.fail
	}
	return r.wait
}

func (r *resolver) waitFor(kind, name, reason, format string, args ...any) *WaitError {
	return &WaitError{Kind: kind, Namespace: r.ns, Name: name, Reason: reason, Message: fmt.Sprintf(format, args...)}
}

func (r *resolver) secretMissing(name string) *WaitError {
	return r.waitFor("Secret", name, ReasonSecretMissing, "secret %q not found", name)
}

func (r *resolver) configMapMissing(name string) *WaitError {
	return r.waitFor("ConfigMap", name, ReasonConfigMapMissing, "configmap %q not found", name)
}

// The ConfigMap that maps images to commands.
const (
	ImagesNamespace = "infera-system"
	ImagesConfigMap = "images"
)

// ImageCommands reads the image-to-command ConfigMap. An entry's value is either
// `IMAGE = COMMAND ARGS...` (any key: ConfigMap keys cannot hold the '/' and ':' of an image
// reference), or `COMMAND ARGS...` with the image as the key (bare image names); command lines
// are split on spaces.
func ImageCommands(cm *corev1.ConfigMap) map[string][]string {
	out := map[string][]string{}
	if cm == nil {
		return out
	}
	for key, line := range cm.Data {
		image := key
		if img, cmd, ok := strings.Cut(line, " = "); ok {
			image, line = strings.TrimSpace(img), cmd
		}
		if f := strings.Fields(line); len(f) > 0 {
			out[image] = f
		}
	}
	return out
}

// pullSecrets reads the revision's imagePullSecrets: kubernetes.io/dockerconfigjson Secrets
// (and the older kubernetes.io/dockercfg). A missing one makes the revision wait: its pull
// would fail without it.
func (r *resolver) pullSecrets(rev *servingv1.Revision) [][]byte {
	var out [][]byte
	for _, ref := range rev.Spec.ImagePullSecrets {
		s := r.objs.Secret(r.ns, ref.Name)
		if s == nil {
			r.problem(fmt.Errorf("imagePullSecrets: %w", r.secretMissing(ref.Name)))
			continue
		}
		if v, ok := secretValue(s, corev1.DockerConfigJsonKey); ok {
			out = append(out, []byte(v))
			continue
		}
		if v, ok := secretValue(s, corev1.DockerConfigKey); ok {
			// .dockercfg is the "auths" map itself.
			out = append(out, []byte(`{"auths":`+v+`}`))
			continue
		}
		r.problem(fmt.Errorf("imagePullSecrets: %w", r.waitFor("Secret", ref.Name, ReasonSecretKeyMissing, "secret %q has no key %q (type %s)", ref.Name, corev1.DockerConfigJsonKey, corev1.SecretTypeDockerConfigJson)))
	}
	return out
}

// resources are the container's cpu and memory, as an engine enforces them.
func resources(rr corev1.ResourceRequirements) workload.Resources {
	var out workload.Resources
	if q, ok := rr.Limits[corev1.ResourceCPU]; ok {
		out.CPULimitMilli = q.MilliValue()
	}
	if q, ok := rr.Requests[corev1.ResourceCPU]; ok {
		out.CPURequestMilli = q.MilliValue()
	}
	if q, ok := rr.Limits[corev1.ResourceMemory]; ok {
		out.MemoryLimit = q.Value()
	}
	return out
}

// security merges the pod's and the container's securityContext, the container's winning.
func security(pod *corev1.PodSecurityContext, c *corev1.SecurityContext) workload.Security {
	var out workload.Security
	if pod != nil {
		out.RunAsUser, out.RunAsGroup = pod.RunAsUser, pod.RunAsGroup
		out.RunAsNonRoot = pod.RunAsNonRoot != nil && *pod.RunAsNonRoot
	}
	if c == nil {
		return out
	}
	if c.RunAsUser != nil {
		out.RunAsUser = c.RunAsUser
	}
	if c.RunAsGroup != nil {
		out.RunAsGroup = c.RunAsGroup
	}
	if c.RunAsNonRoot != nil {
		out.RunAsNonRoot = *c.RunAsNonRoot
	}
	out.ReadOnlyRootFilesystem = c.ReadOnlyRootFilesystem != nil && *c.ReadOnlyRootFilesystem
	out.Privileged = c.Privileged != nil && *c.Privileged
	out.AllowPrivilegeEscalation = c.AllowPrivilegeEscalation
	if c.Capabilities != nil {
		for _, cp := range c.Capabilities.Add {
			out.CapAdd = append(out.CapAdd, string(cp))
		}
		for _, cp := range c.Capabilities.Drop {
			out.CapDrop = append(out.CapDrop, string(cp))
		}
	}
	return out
}

func seconds(s *int64, def time.Duration) time.Duration {
	if s == nil || *s == 0 {
		return def
	}
	return time.Duration(*s) * time.Second
}

func (r *resolver) env(rev *servingv1.Revision, c corev1.Container) []workload.EnvVar {
	var env []workload.EnvVar
	for _, from := range c.EnvFrom {
		switch {
		case from.SecretRef != nil:
			s := r.objs.Secret(r.ns, from.SecretRef.Name)
			if s == nil {
				if !optional(from.SecretRef.Optional) {
					r.problem(fmt.Errorf("envFrom: %w", r.secretMissing(from.SecretRef.Name)))
				}
				continue
			}
			for _, k := range manifest.SecretKeys(s) {
				v, _ := secretValue(s, k)
				env = append(env, workload.EnvVar{Name: from.Prefix + k, Value: v, Secret: true})
			}
		case from.ConfigMapRef != nil:
			cm := r.objs.ConfigMap(r.ns, from.ConfigMapRef.Name)
			if cm == nil {
				if !optional(from.ConfigMapRef.Optional) {
					r.problem(fmt.Errorf("envFrom: %w", r.configMapMissing(from.ConfigMapRef.Name)))
				}
				continue
			}
			for _, k := range slices.Sorted(maps.Keys(cm.Data)) {
				env = append(env, workload.EnvVar{Name: from.Prefix + k, Value: cm.Data[k]})
			}
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env = append(env, workload.EnvVar{Name: e.Name, Value: e.Value})
			continue
		}
		switch vf := e.ValueFrom; {
		case vf.SecretKeyRef != nil:
			ref := vf.SecretKeyRef
			s := r.objs.Secret(r.ns, ref.Name)
			v, ok := secretValue(s, ref.Key)
			switch {
			case ok:
				env = append(env, workload.EnvVar{Name: e.Name, Value: v, Secret: true})
			case optional(ref.Optional):
			case s == nil:
				r.problem(fmt.Errorf("env %s: %w", e.Name, r.secretMissing(ref.Name)))
			default:
				r.problem(fmt.Errorf("env %s: %w", e.Name, r.waitFor("Secret", ref.Name, ReasonSecretKeyMissing, "secret %q has no key %q", ref.Name, ref.Key)))
			}
		case vf.ConfigMapKeyRef != nil:
			ref := vf.ConfigMapKeyRef
			cm := r.objs.ConfigMap(r.ns, ref.Name)
			var v string
			ok := cm != nil
			if ok {
				v, ok = cm.Data[ref.Key]
			}
			switch {
			case ok:
				env = append(env, workload.EnvVar{Name: e.Name, Value: v})
			case optional(ref.Optional):
			case cm == nil:
				r.problem(fmt.Errorf("env %s: %w", e.Name, r.configMapMissing(ref.Name)))
			default:
				r.problem(fmt.Errorf("env %s: %w", e.Name, r.waitFor("ConfigMap", ref.Name, ReasonConfigMapKeyMissing, "configmap %q has no key %q", ref.Name, ref.Key)))
			}
		case vf.FieldRef != nil:
			v, err := fieldRef(rev, vf.FieldRef.FieldPath)
			if err != nil {
				r.problem(fmt.Errorf("env %s: %w", e.Name, err))
				continue
			}
			env = append(env, workload.EnvVar{Name: e.Name, Value: v})
		default:
			r.problem(fmt.Errorf("env %s: resourceFieldRef is not supported by infera's process backend", e.Name))
		}
	}
	return env
}

// fieldRef answers the downward API fields that mean something on one machine. A pod's name is
// per replica; infera gives the revision's name (the supervisor adds the replica's own name as
// INFERA_REPLICA).
func fieldRef(rev *servingv1.Revision, path string) (string, error) {
	switch path {
	case "metadata.namespace":
		return rev.Namespace, nil
	case "metadata.name":
		return rev.Name, nil
	case "status.podIP", "status.hostIP":
		return "127.0.0.1", nil
	case "spec.nodeName":
		return "localhost", nil
	case "spec.serviceAccountName":
		return "default", nil
	}
	if strings.HasPrefix(path, "metadata.labels['") && strings.HasSuffix(path, "']") {
		return rev.Labels[path[len("metadata.labels['"):len(path)-2]], nil
	}
	if strings.HasPrefix(path, "metadata.annotations['") && strings.HasSuffix(path, "']") {
		return rev.Annotations[path[len("metadata.annotations['"):len(path)-2]], nil
	}
	return "", fmt.Errorf("fieldRef %q is not supported by infera", path)
}

func optional(b *bool) bool { return b != nil && *b }

func secretValue(s *corev1.Secret, key string) (string, bool) {
	if s == nil {
		return "", false
	}
	if v, ok := s.StringData[key]; ok {
		return v, true
	}
	v, ok := s.Data[key]
	return string(v), ok
}

func (r *resolver) volumes(rev *servingv1.Revision, c corev1.Container) []workload.Volume {
	byName := map[string]corev1.Volume{}
	for _, v := range rev.Spec.Volumes {
		byName[v.Name] = v
	}
	var out []workload.Volume
	for _, m := range c.VolumeMounts {
		v, ok := byName[m.Name]
		if !ok {
			r.problem(fmt.Errorf("volumeMount %q names no volume", m.Name))
			continue
		}
		vol := workload.Volume{Name: m.Name, MountPath: m.MountPath, ReadOnly: m.ReadOnly, SubPath: m.SubPath}
		switch {
		case v.EmptyDir != nil:
			vol.Kind = workload.VolumeEmptyDir
		case v.Secret != nil:
			// An optional Secret that is missing mounts empty, as in Kubernetes.
			s, opt := r.objs.Secret(r.ns, v.Secret.SecretName), optional(v.Secret.Optional)
			if s == nil && !opt {
				r.problem(fmt.Errorf("volume %q: %w", v.Name, r.secretMissing(v.Secret.SecretName)))
				continue
			}
			files := map[string][]byte{}
			if s != nil {
				for _, k := range manifest.SecretKeys(s) {
					val, _ := secretValue(s, k)
					files[k] = []byte(val)
				}
			}
			files, missing := project(files, v.Secret.Items)
			if missing != "" && !opt {
				r.problem(fmt.Errorf("volume %q: %w", v.Name, r.waitFor("Secret", v.Secret.SecretName, ReasonSecretKeyMissing, "secret %q has no key %q", v.Secret.SecretName, missing)))
				continue
			}
			vol.Kind, vol.Files, vol.Secret, vol.ReadOnly = workload.VolumeFiles, files, true, true
		case v.ConfigMap != nil:
			cm, opt := r.objs.ConfigMap(r.ns, v.ConfigMap.Name), optional(v.ConfigMap.Optional)
			if cm == nil && !opt {
				r.problem(fmt.Errorf("volume %q: %w", v.Name, r.configMapMissing(v.ConfigMap.Name)))
				continue
			}
			files := map[string][]byte{}
			if cm != nil {
				for k, val := range cm.Data {
					files[k] = []byte(val)
				}
				for k, val := range cm.BinaryData {
					files[k] = val
				}
			}
			files, missing := project(files, v.ConfigMap.Items)
			if missing != "" && !opt {
				r.problem(fmt.Errorf("volume %q: %w", v.Name, r.waitFor("ConfigMap", v.ConfigMap.Name, ReasonConfigMapKeyMissing, "configmap %q has no key %q", v.ConfigMap.Name, missing)))
				continue
			}
			vol.Kind, vol.Files, vol.ReadOnly = workload.VolumeFiles, files, true
		case v.PersistentVolumeClaim != nil:
			path, err := r.claimPath(v.PersistentVolumeClaim.ClaimName)
			if err != nil {
				r.problem(fmt.Errorf("volume %q: %w", v.Name, err))
				continue
			}
			vol.Kind, vol.HostPath = workload.VolumeHostPath, path
			vol.ReadOnly = vol.ReadOnly || v.PersistentVolumeClaim.ReadOnly
		default:
			r.problem(fmt.Errorf("volume %q: only emptyDir, secret, configMap and persistentVolumeClaim volumes are supported", v.Name))
			continue
		}
		out = append(out, vol)
	}
	return out
}

// project keeps only the items a volume lists, under their paths; missing is the first listed
// key that files lacks ("" when none).
func project(files map[string][]byte, items []corev1.KeyToPath) (projected map[string][]byte, missing string) {
	if len(items) == 0 {
		return files, ""
	}
	out := map[string][]byte{}
	for _, it := range items {
		v, ok := files[it.Key]
		if !ok {
			if missing == "" {
				missing = it.Key
			}
			continue
		}
		out[it.Path] = v
	}
	return out, missing
}

// claimPath maps a claim to a local directory: a PVC annotated infera.dev/host-path, or a
// Dataset (Fluid creates a claim of the Dataset's name).
func (r *resolver) claimPath(name string) (string, error) {
	if pvc := r.objs.PersistentVolumeClaim(r.ns, name); pvc != nil {
		p := pvc.Annotations[manifest.HostPathAnnotation]
		if p == "" {
			return "", r.waitFor("PersistentVolumeClaim", name, ReasonClaimHostPathMissing, "claim %q has no %s annotation naming its directory on this machine", name, manifest.HostPathAnnotation)
		}
		return p, nil
	}
	d := r.objs.Dataset(r.ns, name)
	if d == nil {
		return "", r.waitFor("PersistentVolumeClaim", name, ReasonClaimMissing, "claim %q: no PersistentVolumeClaim or Dataset of that name", name)
	}
	if r.opts.DatasetPath != nil {
		return r.opts.DatasetPath(r.rev, d)
	}
	var sources []string
	for _, m := range d.Spec.Mounts {
		sources = append(sources, m.MountPoint)
	}
	if len(sources) == 0 {
		return "", fmt.Errorf("dataset %q has no mounts", name)
	}
	if len(sources) == 1 {
		switch mp := sources[0]; {
		case strings.HasPrefix(mp, "local://"):
			return filepath.Clean("/" + strings.TrimPrefix(mp, "local://")), nil
		case strings.HasPrefix(mp, "/"):
			return filepath.Clean(mp), nil
		}
	}
	return "", fmt.Errorf("dataset %q: serving it needs the model cache (fetching %s into the tiered store), which is not built yet; only a single local:// or absolute-path (NAS) mount is served directly", name, strings.Join(sources, ", "))
}

// probe converts a Kubernetes probe to Knative's runtime semantics. A readiness probe that is
// absent becomes Knative's default TCP probe on the port; periodSeconds 0 on readiness is
// Knative's aggressive probing.
func probe(p *corev1.Probe, readiness bool) *workload.Probe {
	if p == nil {
		if !readiness {
			return nil
		}
		return &workload.Probe{Handler: workload.ProbeTCP, SuccessThreshold: 1, FailureThreshold: 3, Timeout: time.Second}
	}
	out := &workload.Probe{
		InitialDelay:     time.Duration(p.InitialDelaySeconds) * time.Second,
		Period:           time.Duration(p.PeriodSeconds) * time.Second,
		Timeout:          time.Duration(p.TimeoutSeconds) * time.Second,
		SuccessThreshold: int(p.SuccessThreshold),
		FailureThreshold: int(p.FailureThreshold),
	}
	if out.Timeout == 0 {
		out.Timeout = time.Second
	}
	if out.SuccessThreshold == 0 {
		out.SuccessThreshold = 1
	}
	if out.FailureThreshold == 0 {
		out.FailureThreshold = 3
	}
	if !readiness && out.Period == 0 {
		out.Period = 10 * time.Second
	}
	switch h := p.ProbeHandler; {
	case h.HTTPGet != nil:
		out.Handler, out.Path, out.Scheme, out.Port = workload.ProbeHTTP, h.HTTPGet.Path, string(h.HTTPGet.Scheme), h.HTTPGet.Port.IntVal
		if len(h.HTTPGet.HTTPHeaders) > 0 {
			out.Headers = map[string]string{}
			for _, hd := range h.HTTPGet.HTTPHeaders {
				out.Headers[hd.Name] = hd.Value
			}
		}
	case h.TCPSocket != nil:
		out.Handler, out.Port = workload.ProbeTCP, h.TCPSocket.Port.IntVal
	case h.Exec != nil:
		out.Handler, out.Command = workload.ProbeExec, h.Exec.Command
	case h.GRPC != nil:
		out.Handler, out.Port = workload.ProbeGRPC, h.GRPC.Port
		if h.GRPC.Service != nil {
			out.Service = *h.GRPC.Service
		}
	}
	return out
}
