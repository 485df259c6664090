package reconciler

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/infera-dev/infera/internal/fluid"
	"github.com/infera-dev/infera/internal/manifest"
	"github.com/infera-dev/infera/internal/workload"
)

// ErrUnresolvable is wrapped by every error that keeps a revision from being run.
var ErrUnresolvable = errors.New("cannot run revision")

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
	// DatasetPath returns the local directory that serves a Dataset's claim. Nil: only
	// Datasets whose mount is local:// or an absolute path (NAS) resolve, to that path.
	DatasetPath func(d *fluid.Dataset) (string, error)
}

// Resolve turns a Knative Revision into what the supervisor runs and the gateway serves:
// references to Secrets and ConfigMaps resolved, claims mapped to local directories, probes
// and timeouts in Knative's defaults.
func Resolve(rev *servingv1.Revision, objs Objects, opts ResolveOptions) (workload.Revision, error) {
	fail := func(format string, args ...any) (workload.Revision, error) {
		return workload.Revision{}, fmt.Errorf("%w %s/%s: %s", ErrUnresolvable, rev.Namespace, rev.Name, fmt.Sprintf(format, args...))
	}
	spec := rev.Spec
	if len(spec.Containers) != 1 {
		return fail("infera runs single-container revisions; this one has %d containers", len(spec.Containers))
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

	cmd := append(append([]string(nil), c.Command...), c.Args...)
	if len(c.Command) == 0 {
		mapped, ok := opts.Images[c.Image]
		if !ok {
			return fail("container %q has no command and image %q has no command mapping: add `command:` to the container, or map the image in ConfigMap %s/%s (key: the image, value: the command line)", c.Name, c.Image, ImagesNamespace, ImagesConfigMap)
		}
		cmd = append(append([]string(nil), mapped...), c.Args...)
	}
	if cmd[0] == "infera" && opts.Self != "" {
		cmd[0] = opts.Self
	}
	out.Container = workload.Container{
		Name: c.Name, Image: c.Image, Command: cmd[:1], Args: cmd[1:], WorkingDir: c.WorkingDir,
	}
	if len(c.Ports) > 0 {
		out.Container.Port = c.Ports[0].ContainerPort
		out.Container.PortName = c.Ports[0].Name
	}
	if q, ok := c.Resources.Limits[manifest.GPUMemResource]; ok {
		out.Container.GPUMemGiB = int(q.Value())
	}

	env, err := resolveEnv(rev, c, objs)
	if err != nil {
		return fail("%v", err)
	}
	out.Container.Env = env
	out.Container.ReadinessProbe = probe(c.ReadinessProbe, true)
	out.Container.LivenessProbe = probe(c.LivenessProbe, false)
	out.Container.StartupProbe = probe(c.StartupProbe, false)

	vols, err := resolveVolumes(rev, c, objs, opts)
	if err != nil {
		return fail("%v", err)
	}
	out.Volumes = vols
	return out, nil
}

// The ConfigMap that maps images to commands.
const (
	ImagesNamespace = "infera-system"
	ImagesConfigMap = "images"
)

// ImageCommands reads the image-to-command ConfigMap: each key is an image, each value a
// command line split on spaces.
func ImageCommands(cm *corev1.ConfigMap) map[string][]string {
	out := map[string][]string{}
	if cm == nil {
		return out
	}
	for image, line := range cm.Data {
		if f := strings.Fields(line); len(f) > 0 {
			out[image] = f
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

func resolveEnv(rev *servingv1.Revision, c corev1.Container, objs Objects) ([]workload.EnvVar, error) {
	var env []workload.EnvVar
	for _, from := range c.EnvFrom {
		switch {
		case from.SecretRef != nil:
			s := objs.Secret(rev.Namespace, from.SecretRef.Name)
			if s == nil {
				if optional(from.SecretRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("envFrom: secret %q not found", from.SecretRef.Name)
			}
			for _, k := range secretKeys(s) {
				v, _ := secretValue(s, k)
				env = append(env, workload.EnvVar{Name: from.Prefix + k, Value: v, Secret: true})
			}
		case from.ConfigMapRef != nil:
			cm := objs.ConfigMap(rev.Namespace, from.ConfigMapRef.Name)
			if cm == nil {
				if optional(from.ConfigMapRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("envFrom: configmap %q not found", from.ConfigMapRef.Name)
			}
			for _, k := range sortedKeys(cm.Data) {
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
			s := objs.Secret(rev.Namespace, vf.SecretKeyRef.Name)
			v, ok := secretValue(s, vf.SecretKeyRef.Key)
			if !ok {
				if optional(vf.SecretKeyRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("env %s: secret %q has no key %q", e.Name, vf.SecretKeyRef.Name, vf.SecretKeyRef.Key)
			}
			env = append(env, workload.EnvVar{Name: e.Name, Value: v, Secret: true})
		case vf.ConfigMapKeyRef != nil:
			cm := objs.ConfigMap(rev.Namespace, vf.ConfigMapKeyRef.Name)
			var v string
			ok := cm != nil
			if ok {
				v, ok = cm.Data[vf.ConfigMapKeyRef.Key]
			}
			if !ok {
				if optional(vf.ConfigMapKeyRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("env %s: configmap %q has no key %q", e.Name, vf.ConfigMapKeyRef.Name, vf.ConfigMapKeyRef.Key)
			}
			env = append(env, workload.EnvVar{Name: e.Name, Value: v})
		case vf.FieldRef != nil:
			v, err := fieldRef(rev, vf.FieldRef.FieldPath)
			if err != nil {
				return nil, fmt.Errorf("env %s: %w", e.Name, err)
			}
			env = append(env, workload.EnvVar{Name: e.Name, Value: v})
		default:
			return nil, fmt.Errorf("env %s: resourceFieldRef is not supported by infera's process backend", e.Name)
		}
	}
	return env, nil
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

func secretKeys(s *corev1.Secret) []string {
	seen := map[string]bool{}
	var keys []string
	for k := range s.Data {
		seen[k] = true
		keys = append(keys, k)
	}
	for k := range s.StringData {
		if !seen[k] {
			keys = append(keys, k)
		}
	}
	sortStrings(keys)
	return keys
}

func resolveVolumes(rev *servingv1.Revision, c corev1.Container, objs Objects, opts ResolveOptions) ([]workload.Volume, error) {
	byName := map[string]corev1.Volume{}
	for _, v := range rev.Spec.Volumes {
		byName[v.Name] = v
	}
	var out []workload.Volume
	for _, m := range c.VolumeMounts {
		v, ok := byName[m.Name]
		if !ok {
			return nil, fmt.Errorf("volumeMount %q names no volume", m.Name)
		}
		vol := workload.Volume{Name: m.Name, MountPath: m.MountPath, ReadOnly: m.ReadOnly, SubPath: m.SubPath}
		switch {
		case v.EmptyDir != nil:
			vol.Kind = workload.VolumeEmptyDir
		case v.Secret != nil:
			s := objs.Secret(rev.Namespace, v.Secret.SecretName)
			if s == nil {
				return nil, fmt.Errorf("volume %q: secret %q not found", v.Name, v.Secret.SecretName)
			}
			files := map[string][]byte{}
			for _, k := range secretKeys(s) {
				val, _ := secretValue(s, k)
				files[k] = []byte(val)
			}
			vol.Kind, vol.Files, vol.Secret, vol.ReadOnly = workload.VolumeFiles, project(files, v.Secret.Items), true, true
		case v.ConfigMap != nil:
			cm := objs.ConfigMap(rev.Namespace, v.ConfigMap.Name)
			if cm == nil {
				return nil, fmt.Errorf("volume %q: configmap %q not found", v.Name, v.ConfigMap.Name)
			}
			files := map[string][]byte{}
			for k, val := range cm.Data {
				files[k] = []byte(val)
			}
			for k, val := range cm.BinaryData {
				files[k] = val
			}
			vol.Kind, vol.Files, vol.ReadOnly = workload.VolumeFiles, project(files, v.ConfigMap.Items), true
		case v.PersistentVolumeClaim != nil:
			path, err := claimPath(rev.Namespace, v.PersistentVolumeClaim.ClaimName, objs, opts)
			if err != nil {
				return nil, fmt.Errorf("volume %q: %w", v.Name, err)
			}
			vol.Kind, vol.HostPath = workload.VolumeHostPath, path
			vol.ReadOnly = vol.ReadOnly || v.PersistentVolumeClaim.ReadOnly
		default:
			return nil, fmt.Errorf("volume %q: only emptyDir, secret, configMap and persistentVolumeClaim volumes are supported", v.Name)
		}
		out = append(out, vol)
	}
	return out, nil
}

// project keeps only the items a volume lists, under their paths.
func project(files map[string][]byte, items []corev1.KeyToPath) map[string][]byte {
	if len(items) == 0 {
		return files
	}
	out := map[string][]byte{}
	for _, it := range items {
		if v, ok := files[it.Key]; ok {
			out[it.Path] = v
		}
	}
	return out
}

// claimPath maps a claim to a local directory: a PVC annotated infera.dev/host-path, or a
// Dataset (Fluid creates a claim of the Dataset's name).
func claimPath(ns, name string, objs Objects, opts ResolveOptions) (string, error) {
	if pvc := objs.PersistentVolumeClaim(ns, name); pvc != nil {
		p, ok := pvc.Annotations[manifest.HostPathAnnotation]
		if !ok {
			return "", fmt.Errorf("claim %q has no %s annotation naming its directory on this machine", name, manifest.HostPathAnnotation)
		}
		return p, nil
	}
	d := objs.Dataset(ns, name)
	if d == nil {
		return "", fmt.Errorf("claim %q: no PersistentVolumeClaim or Dataset of that name", name)
	}
	if opts.DatasetPath != nil {
		return opts.DatasetPath(d)
	}
	if len(d.Spec.Mounts) == 1 {
		mp := d.Spec.Mounts[0].MountPoint
		switch {
		case strings.HasPrefix(mp, "local://"):
			return filepath.Clean("/" + strings.TrimPrefix(mp, "local://")), nil
		case strings.HasPrefix(mp, "/"):
			return filepath.Clean(mp), nil
		}
	}
	return "", fmt.Errorf("dataset %q: serving it needs the model cache (fetching %s into the tiered store), which is not built yet; only a single local:// or absolute-path (NAS) mount is served directly", name, d.Spec.Mounts[0].MountPoint)
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
