package reconciler

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/infera-dev/infera/internal/fluid"
	"github.com/infera-dev/infera/internal/manifest"
	"github.com/infera-dev/infera/internal/workload"
)

// fakeObjects is an in-memory Objects: each object under "Kind/namespace/name".
type fakeObjects map[string]any

func objects(objs ...metav1.Object) fakeObjects {
	o := fakeObjects{}
	for _, obj := range objs {
		kind := fmt.Sprintf("%T", obj)
		switch obj.(type) {
		case *corev1.Secret:
			kind = "Secret"
		case *corev1.ConfigMap:
			kind = "ConfigMap"
		case *corev1.PersistentVolumeClaim:
			kind = "PersistentVolumeClaim"
		case *fluid.Dataset:
			kind = "Dataset"
		}
		o[kind+"/"+obj.GetNamespace()+"/"+obj.GetName()] = obj
	}
	return o
}

func lookup[T any](o fakeObjects, kind, namespace, name string) *T {
	v, _ := o[kind+"/"+namespace+"/"+name].(*T)
	return v
}

func (o fakeObjects) Secret(ns, name string) *corev1.Secret {
	return lookup[corev1.Secret](o, "Secret", ns, name)
}

func (o fakeObjects) ConfigMap(ns, name string) *corev1.ConfigMap {
	return lookup[corev1.ConfigMap](o, "ConfigMap", ns, name)
}

func (o fakeObjects) PersistentVolumeClaim(ns, name string) *corev1.PersistentVolumeClaim {
	return lookup[corev1.PersistentVolumeClaim](o, "PersistentVolumeClaim", ns, name)
}

func (o fakeObjects) Dataset(ns, name string) *fluid.Dataset {
	return lookup[fluid.Dataset](o, "Dataset", ns, name)
}

func meta(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name, Namespace: "default"} }

func secret(name string, data map[string]string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: meta(name), Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

func configMap(name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: meta(name), Data: data}
}

// pvc is a claim; hostPath "" leaves out the host-path annotation.
func pvc(name, hostPath string) *corev1.PersistentVolumeClaim {
	c := &corev1.PersistentVolumeClaim{ObjectMeta: meta(name)}
	if hostPath != "" {
		c.Annotations = map[string]string{manifest.HostPathAnnotation: hostPath}
	}
	return c
}

func dataset(name string, mountPoints ...string) *fluid.Dataset {
	d := &fluid.Dataset{ObjectMeta: meta(name)}
	for _, mp := range mountPoints {
		d.Spec.Mounts = append(d.Spec.Mounts, fluid.Mount{MountPoint: mp})
	}
	return d
}

// revision is revision llm-00001 of Service llm, one container running `serve`, edited by edits.
func revision(edits ...func(*servingv1.Revision)) *servingv1.Revision {
	r := &servingv1.Revision{
		ObjectMeta: metav1.ObjectMeta{
			Name: "llm-00001", Namespace: "default",
			Labels: map[string]string{labelService: "llm", labelConfiguration: "llm", labelConfigGen: "1"},
		},
		Spec: servingv1.RevisionSpec{PodSpec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "user-container", Image: "example.com/llm:1", Command: []string{"serve"}},
		}}},
	}
	for _, edit := range edits {
		edit(r)
	}
	return r
}

func container(edit func(c *corev1.Container)) func(*servingv1.Revision) {
	return func(r *servingv1.Revision) { edit(&r.Spec.Containers[0]) }
}

func withEnv(vars ...corev1.EnvVar) func(*servingv1.Revision) {
	return container(func(c *corev1.Container) { c.Env = append(c.Env, vars...) })
}

func withEnvFrom(from ...corev1.EnvFromSource) func(*servingv1.Revision) {
	return container(func(c *corev1.Container) { c.EnvFrom = append(c.EnvFrom, from...) })
}

// withVolume adds a volume named name and mounts it at /mnt/name.
func withVolume(name string, src corev1.VolumeSource) func(*servingv1.Revision) {
	return func(r *servingv1.Revision) {
		r.Spec.Volumes = append(r.Spec.Volumes, corev1.Volume{Name: name, VolumeSource: src})
		c := &r.Spec.Containers[0]
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: name, MountPath: "/mnt/" + name})
	}
}

func secretEnv(name, secret, key string, optional bool) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: key, Optional: &optional,
	}}}
}

func configMapEnv(name, cm, key string, optional bool) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: cm}, Key: key, Optional: &optional,
	}}}
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

func secretFrom(name, prefix string, optional bool) corev1.EnvFromSource {
	return corev1.EnvFromSource{Prefix: prefix, SecretRef: &corev1.SecretEnvSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: name}, Optional: &optional,
	}}
}

func configMapFrom(name, prefix string, optional bool) corev1.EnvFromSource {
	return corev1.EnvFromSource{Prefix: prefix, ConfigMapRef: &corev1.ConfigMapEnvSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: name}, Optional: &optional,
	}}
}

func secretVolume(name string, optional bool, items ...corev1.KeyToPath) corev1.VolumeSource {
	return corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: name, Items: items, Optional: &optional}}
}

func configMapVolume(name string, optional bool, items ...corev1.KeyToPath) corev1.VolumeSource {
	return corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: name}, Items: items, Optional: &optional,
	}}
}

func claimVolume(claim string) corev1.VolumeSource {
	return corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}
}

func TestResolveEnv(t *testing.T) {
	withLabels := func(r *servingv1.Revision) {
		r.Labels["team"] = "ml"
		r.Annotations = map[string]string{"owner": "ana"}
	}
	mixed := secret("mixed", map[string]string{"b": "data-b", "a": "data-a"})
	mixed.StringData = map[string]string{"b": "string-b", "c": "string-c"}
	for _, tc := range []struct {
		name string
		rev  *servingv1.Revision
		objs fakeObjects
		want []workload.EnvVar
	}{
		{"none", revision(), nil, nil},
		{
			"value, $(VAR) left for the supervisor",
			revision(withEnv(corev1.EnvVar{Name: "A", Value: "1"}, corev1.EnvVar{Name: "DIR", Value: "$(HOME)/models"})),
			nil,
			[]workload.EnvVar{{Name: "A", Value: "1"}, {Name: "DIR", Value: "$(HOME)/models"}},
		},
		{
			"secretKeyRef is secret",
			revision(withEnv(secretEnv("HF_TOKEN", "hf", "token", false))),
			objects(secret("hf", map[string]string{"token": "hf_123"})),
			[]workload.EnvVar{{Name: "HF_TOKEN", Value: "hf_123", Secret: true}},
		},
		{
			"secretKeyRef from stringData",
			revision(withEnv(secretEnv("C", "mixed", "c", false))),
			objects(mixed),
			[]workload.EnvVar{{Name: "C", Value: "string-c", Secret: true}},
		},
		{
			"configMapKeyRef",
			revision(withEnv(configMapEnv("MODEL", "cfg", "model", false))),
			objects(configMap("cfg", map[string]string{"model": "qwen"})),
			[]workload.EnvVar{{Name: "MODEL", Value: "qwen"}},
		},
		{
			"fieldRef",
			revision(withLabels, withEnv(
				fieldEnv("NAME", "metadata.name"),
				fieldEnv("NS", "metadata.namespace"),
				fieldEnv("POD_IP", "status.podIP"),
				fieldEnv("HOST_IP", "status.hostIP"),
				fieldEnv("NODE", "spec.nodeName"),
				fieldEnv("SA", "spec.serviceAccountName"),
				fieldEnv("TEAM", "metadata.labels['team']"),
				fieldEnv("OWNER", "metadata.annotations['owner']"),
				fieldEnv("NOLABEL", "metadata.labels['absent']"),
			)),
			nil,
			[]workload.EnvVar{
				{Name: "NAME", Value: "llm-00001"}, {Name: "NS", Value: "default"},
				{Name: "POD_IP", Value: "127.0.0.1"}, {Name: "HOST_IP", Value: "127.0.0.1"},
				{Name: "NODE", Value: "localhost"}, {Name: "SA", Value: "default"},
				{Name: "TEAM", Value: "ml"}, {Name: "OWNER", Value: "ana"}, {Name: "NOLABEL", Value: ""},
			},
		},
		{
			"optional refs missing are left out",
			revision(withEnv(
				secretEnv("S1", "absent", "k", true),
				secretEnv("S2", "hf", "absent", true),
				configMapEnv("C1", "absent", "k", true),
				configMapEnv("C2", "cfg", "absent", true),
				corev1.EnvVar{Name: "KEPT", Value: "yes"},
			), withEnvFrom(secretFrom("absent", "", true), configMapFrom("absent", "", true))),
			objects(secret("hf", map[string]string{"token": "t"}), configMap("cfg", map[string]string{"model": "m"})),
			[]workload.EnvVar{{Name: "KEPT", Value: "yes"}},
		},
		{
			"envFrom secret with prefix: sorted, stringData over data, secret",
			revision(withEnvFrom(secretFrom("mixed", "S_", false))),
			objects(mixed),
			[]workload.EnvVar{
				{Name: "S_a", Value: "data-a", Secret: true},
				{Name: "S_b", Value: "string-b", Secret: true},
				{Name: "S_c", Value: "string-c", Secret: true},
			},
		},
		{
			"envFrom configMap with prefix, sorted",
			revision(withEnvFrom(configMapFrom("cfg", "CFG_", false))),
			objects(configMap("cfg", map[string]string{"model": "qwen", "dtype": "bf16"})),
			[]workload.EnvVar{{Name: "CFG_dtype", Value: "bf16"}, {Name: "CFG_model", Value: "qwen"}},
		},
		{
			"envFrom first, then env, in order",
			revision(withEnv(corev1.EnvVar{Name: "model", Value: "override"}), withEnvFrom(configMapFrom("cfg", "", false))),
			objects(configMap("cfg", map[string]string{"model": "qwen"})),
			[]workload.EnvVar{{Name: "model", Value: "qwen"}, {Name: "model", Value: "override"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Resolve(tc.rev, tc.objs, ResolveOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Container.Env, tc.want) {
				t.Errorf("env = %+v\nwant  %+v", got.Container.Env, tc.want)
			}
		})
	}
}

func TestResolveWaits(t *testing.T) {
	elsewhere := secret("hf", map[string]string{"token": "t"})
	elsewhere.Namespace = "other"
	fetching := func(_ *servingv1.Revision, d *fluid.Dataset) (string, error) {
		return "", &WaitError{Kind: "Dataset", Namespace: d.Namespace, Name: d.Name, Reason: "DatasetFetching", Message: fmt.Sprintf("dataset %q is being fetched", d.Name)}
	}
	for _, tc := range []struct {
		name              string
		rev               *servingv1.Revision
		objs              fakeObjects
		opts              ResolveOptions
		kind, obj, reason string
		msg               string
	}{
		{
			"env secret missing",
			revision(withEnv(secretEnv("HF_TOKEN", "hf", "token", false))), nil, ResolveOptions{},
			"Secret", "hf", ReasonSecretMissing,
			`revision default/llm-00001 waits: env HF_TOKEN: secret "hf" not found`,
		},
		{
			"env secret in another namespace",
			revision(withEnv(secretEnv("HF_TOKEN", "hf", "token", false))), objects(elsewhere), ResolveOptions{},
			"Secret", "hf", ReasonSecretMissing,
			`revision default/llm-00001 waits: env HF_TOKEN: secret "hf" not found`,
		},
		{
			"env secret key missing",
			revision(withEnv(secretEnv("HF_TOKEN", "hf", "token", false))),
			objects(secret("hf", map[string]string{"other": "x"})), ResolveOptions{},
			"Secret", "hf", ReasonSecretKeyMissing,
			`revision default/llm-00001 waits: env HF_TOKEN: secret "hf" has no key "token"`,
		},
		{
			"env configmap missing",
			revision(withEnv(configMapEnv("MODEL", "cfg", "model", false))), nil, ResolveOptions{},
			"ConfigMap", "cfg", ReasonConfigMapMissing,
			`revision default/llm-00001 waits: env MODEL: configmap "cfg" not found`,
		},
		{
			"env configmap key missing",
			revision(withEnv(configMapEnv("MODEL", "cfg", "model", false))),
			objects(configMap("cfg", map[string]string{"other": "x"})), ResolveOptions{},
			"ConfigMap", "cfg", ReasonConfigMapKeyMissing,
			`revision default/llm-00001 waits: env MODEL: configmap "cfg" has no key "model"`,
		},
		{
			"envFrom secret missing",
			revision(withEnvFrom(secretFrom("hf", "", false))), nil, ResolveOptions{},
			"Secret", "hf", ReasonSecretMissing,
			`revision default/llm-00001 waits: envFrom: secret "hf" not found`,
		},
		{
			"envFrom configmap missing",
			revision(withEnvFrom(configMapFrom("cfg", "", false))), nil, ResolveOptions{},
			"ConfigMap", "cfg", ReasonConfigMapMissing,
			`revision default/llm-00001 waits: envFrom: configmap "cfg" not found`,
		},
		{
			"volume secret missing",
			revision(withVolume("certs", secretVolume("tls", false))), nil, ResolveOptions{},
			"Secret", "tls", ReasonSecretMissing,
			`revision default/llm-00001 waits: volume "certs": secret "tls" not found`,
		},
		{
			"volume secret item key missing",
			revision(withVolume("certs", secretVolume("tls", false, corev1.KeyToPath{Key: "tls.key", Path: "key.pem"}))),
			objects(secret("tls", map[string]string{"tls.crt": "c"})), ResolveOptions{},
			"Secret", "tls", ReasonSecretKeyMissing,
			`revision default/llm-00001 waits: volume "certs": secret "tls" has no key "tls.key"`,
		},
		{
			"volume configmap missing",
			revision(withVolume("conf", configMapVolume("cfg", false))), nil, ResolveOptions{},
			"ConfigMap", "cfg", ReasonConfigMapMissing,
			`revision default/llm-00001 waits: volume "conf": configmap "cfg" not found`,
		},
		{
			"volume configmap item key missing",
			revision(withVolume("conf", configMapVolume("cfg", false, corev1.KeyToPath{Key: "chat.jinja", Path: "template"}))),
			objects(configMap("cfg", map[string]string{"model": "m"})), ResolveOptions{},
			"ConfigMap", "cfg", ReasonConfigMapKeyMissing,
			`revision default/llm-00001 waits: volume "conf": configmap "cfg" has no key "chat.jinja"`,
		},
		{
			"claim neither PVC nor Dataset",
			revision(withVolume("models", claimVolume("weights"))), nil, ResolveOptions{},
			"PersistentVolumeClaim", "weights", ReasonClaimMissing,
			`revision default/llm-00001 waits: volume "models": claim "weights": no PersistentVolumeClaim or Dataset of that name`,
		},
		{
			"PVC without host path",
			revision(withVolume("models", claimVolume("weights"))), objects(pvc("weights", "")), ResolveOptions{},
			"PersistentVolumeClaim", "weights", ReasonClaimHostPathMissing,
			`revision default/llm-00001 waits: volume "models": claim "weights" has no infera.dev/host-path annotation naming its directory on this machine`,
		},
		{
			"DatasetPath waits",
			revision(withVolume("models", claimVolume("qwen"))), objects(dataset("qwen", "oss://bucket/qwen")),
			ResolveOptions{DatasetPath: fetching},
			"Dataset", "qwen", "DatasetFetching",
			`revision default/llm-00001 waits: volume "models": dataset "qwen" is being fetched`,
		},
		{
			"the first wait is reported",
			revision(withEnv(secretEnv("A", "first", "k", false), secretEnv("B", "second", "k", false)),
				withVolume("conf", configMapVolume("third", false))),
			nil, ResolveOptions{},
			"Secret", "first", ReasonSecretMissing,
			`revision default/llm-00001 waits: env A: secret "first" not found`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Resolve(tc.rev, tc.objs, tc.opts)
			if !errors.Is(err, ErrWaiting) || errors.Is(err, ErrUnresolvable) {
				t.Fatalf("err = %v, want one that matches ErrWaiting only", err)
			}
			var w *WaitError
			if !errors.As(err, &w) {
				t.Fatalf("err = %v: no *WaitError", err)
			}
			if w.Kind != tc.kind || w.Namespace != "default" || w.Name != tc.obj || w.Reason != tc.reason {
				t.Errorf("waits for %s %s/%s (%s), want %s default/%s (%s)", w.Kind, w.Namespace, w.Name, w.Reason, tc.kind, tc.obj, tc.reason)
			}
			if err.Error() != tc.msg {
				t.Errorf("err = %s\nwant  %s", err, tc.msg)
			}
		})
	}
}

func TestResolveFailures(t *testing.T) {
	broken := errors.New("cache index unreadable")
	for _, tc := range []struct {
		name string
		rev  *servingv1.Revision
		objs fakeObjects
		opts ResolveOptions
		msg  string
	}{
		{
			"no containers",
			revision(func(r *servingv1.Revision) { r.Spec.Containers = nil }), nil, ResolveOptions{},
			"cannot run revision default/llm-00001: infera runs single-container revisions; this one has 0 containers",
		},
		{
			"two containers",
			revision(func(r *servingv1.Revision) {
				r.Spec.Containers = append(r.Spec.Containers, corev1.Container{Name: "sidecar"})
			}),
			nil, ResolveOptions{},
			"cannot run revision default/llm-00001: infera runs single-container revisions; this one has 2 containers",
		},
		{
			"no command, image not mapped",
			revision(container(func(c *corev1.Container) { c.Command = nil })), nil,
			ResolveOptions{Images: map[string][]string{"example.com/other:1": {"other"}}},
			`cannot run revision default/llm-00001: container "user-container" has no command and image "example.com/llm:1" has no command mapping: add ` + "`command:`" + ` to the container, or map the image in ConfigMap infera-system/images (key: the image, value: the command line); or start a container engine (dockerd) so that infera runs the image itself`,
		},
		{
			"no command, image mapped to nothing",
			revision(container(func(c *corev1.Container) { c.Command, c.Args = nil, []string{"--port", "8080"} })), nil,
			ResolveOptions{Images: map[string][]string{"example.com/llm:1": nil}},
			`cannot run revision default/llm-00001: container "user-container" has no command and image "example.com/llm:1" has no command mapping: add ` + "`command:`" + ` to the container, or map the image in ConfigMap infera-system/images (key: the image, value: the command line); or start a container engine (dockerd) so that infera runs the image itself`,
		},
		{
			"unsupported fieldRef",
			revision(withEnv(fieldEnv("UID", "metadata.uid"))), nil, ResolveOptions{},
			`cannot run revision default/llm-00001: env UID: fieldRef "metadata.uid" is not supported by infera`,
		},
		{
			"resourceFieldRef",
			revision(withEnv(corev1.EnvVar{Name: "MEM", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{Resource: "limits.memory"}}})),
			nil, ResolveOptions{},
			`cannot run revision default/llm-00001: env MEM: resourceFieldRef is not supported by infera's process backend`,
		},
		{
			"volumeMount names no volume",
			revision(container(func(c *corev1.Container) { c.VolumeMounts = []corev1.VolumeMount{{Name: "ghost", MountPath: "/g"}} })),
			nil, ResolveOptions{},
			`cannot run revision default/llm-00001: volumeMount "ghost" names no volume`,
		},
		{
			"hostPath volume",
			revision(withVolume("host", corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/data"}})), nil, ResolveOptions{},
			`cannot run revision default/llm-00001: volume "host": only emptyDir, secret, configMap and persistentVolumeClaim volumes are supported`,
		},
		{
			"projected volume",
			revision(withVolume("proj", corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{}})), nil, ResolveOptions{},
			`cannot run revision default/llm-00001: volume "proj": only emptyDir, secret, configMap and persistentVolumeClaim volumes are supported`,
		},
		{
			"Dataset in object storage",
			revision(withVolume("models", claimVolume("qwen"))), objects(dataset("qwen", "oss://bucket/qwen")), ResolveOptions{},
			`cannot run revision default/llm-00001: volume "models": dataset "qwen": serving it needs the model cache (fetching oss://bucket/qwen into the tiered store), which is not built yet; only a single local:// or absolute-path (NAS) mount is served directly`,
		},
		{
			"Dataset of two local mounts",
			revision(withVolume("models", claimVolume("qwen"))), objects(dataset("qwen", "local:///a", "/b")), ResolveOptions{},
			`cannot run revision default/llm-00001: volume "models": dataset "qwen": serving it needs the model cache (fetching local:///a, /b into the tiered store), which is not built yet; only a single local:// or absolute-path (NAS) mount is served directly`,
		},
		{
			"Dataset with no mounts",
			revision(withVolume("models", claimVolume("qwen"))), objects(dataset("qwen")), ResolveOptions{},
			`cannot run revision default/llm-00001: volume "models": dataset "qwen" has no mounts`,
		},
		{
			"DatasetPath fails",
			revision(withVolume("models", claimVolume("qwen"))), objects(dataset("qwen", "oss://bucket/qwen")),
			ResolveOptions{DatasetPath: func(*servingv1.Revision, *fluid.Dataset) (string, error) { return "", broken }},
			`cannot run revision default/llm-00001: volume "models": cache index unreadable`,
		},
		{
			"a failure wins over a wait",
			revision(withEnv(secretEnv("HF_TOKEN", "hf", "token", false)),
				withVolume("host", corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/data"}})),
			nil, ResolveOptions{},
			`cannot run revision default/llm-00001: volume "host": only emptyDir, secret, configMap and persistentVolumeClaim volumes are supported`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Resolve(tc.rev, tc.objs, tc.opts)
			if !errors.Is(err, ErrUnresolvable) || errors.Is(err, ErrWaiting) {
				t.Fatalf("err = %v, want one that wraps ErrUnresolvable only", err)
			}
			if err.Error() != tc.msg {
				t.Errorf("err = %s\nwant  %s", err, tc.msg)
			}
		})
	}
	t.Run("DatasetPath's error is kept", func(t *testing.T) {
		_, err := Resolve(revision(withVolume("models", claimVolume("qwen"))), objects(dataset("qwen", "oss://b/q")),
			ResolveOptions{DatasetPath: func(*servingv1.Revision, *fluid.Dataset) (string, error) { return "", broken }})
		if !errors.Is(err, broken) {
			t.Errorf("err = %v, want one that wraps %v", err, broken)
		}
	})
}

func TestResolveVolumes(t *testing.T) {
	readOnly := func(r *servingv1.Revision) {
		m := &r.Spec.Containers[0].VolumeMounts[0]
		m.ReadOnly, m.SubPath = true, "sub"
	}
	claimReadOnly := func(r *servingv1.Revision) { r.Spec.Volumes[0].PersistentVolumeClaim.ReadOnly = true }
	tlsSecret := secret("tls", map[string]string{"tls.crt": "cert", "tls.key": "key"})
	binary := configMap("cfg", map[string]string{"model": "qwen"})
	binary.BinaryData = map[string][]byte{"blob": {0, 1}}
	for _, tc := range []struct {
		name string
		rev  *servingv1.Revision
		objs fakeObjects
		opts ResolveOptions
		want workload.Volume
	}{
		{
			"emptyDir",
			revision(withVolume("scratch", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}})), nil, ResolveOptions{},
			workload.Volume{Name: "scratch", MountPath: "/mnt/scratch", Kind: workload.VolumeEmptyDir},
		},
		{
			"emptyDir read-only with subPath",
			revision(withVolume("scratch", corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}), readOnly), nil, ResolveOptions{},
			workload.Volume{Name: "scratch", MountPath: "/mnt/scratch", ReadOnly: true, SubPath: "sub", Kind: workload.VolumeEmptyDir},
		},
		{
			"secret: every key, read-only, secret",
			revision(withVolume("certs", secretVolume("tls", false))), objects(tlsSecret), ResolveOptions{},
			workload.Volume{Name: "certs", MountPath: "/mnt/certs", ReadOnly: true, Kind: workload.VolumeFiles, Secret: true,
				Files: map[string][]byte{"tls.crt": []byte("cert"), "tls.key": []byte("key")}},
		},
		{
			"secret items: only those, under their paths",
			revision(withVolume("certs", secretVolume("tls", false, corev1.KeyToPath{Key: "tls.crt", Path: "certs/server.pem"}))),
			objects(tlsSecret), ResolveOptions{},
			workload.Volume{Name: "certs", MountPath: "/mnt/certs", ReadOnly: true, Kind: workload.VolumeFiles, Secret: true,
				Files: map[string][]byte{"certs/server.pem": []byte("cert")}},
		},
		{
			"optional secret missing: empty",
			revision(withVolume("certs", secretVolume("tls", true, corev1.KeyToPath{Key: "tls.crt", Path: "c"}))), nil, ResolveOptions{},
			workload.Volume{Name: "certs", MountPath: "/mnt/certs", ReadOnly: true, Kind: workload.VolumeFiles, Secret: true,
				Files: map[string][]byte{}},
		},
		{
			"optional secret item missing: left out",
			revision(withVolume("certs", secretVolume("tls", true,
				corev1.KeyToPath{Key: "tls.crt", Path: "c"}, corev1.KeyToPath{Key: "ca.crt", Path: "ca"}))),
			objects(tlsSecret), ResolveOptions{},
			workload.Volume{Name: "certs", MountPath: "/mnt/certs", ReadOnly: true, Kind: workload.VolumeFiles, Secret: true,
				Files: map[string][]byte{"c": []byte("cert")}},
		},
		{
			"configMap: data and binaryData, read-only",
			revision(withVolume("conf", configMapVolume("cfg", false))), objects(binary), ResolveOptions{},
			workload.Volume{Name: "conf", MountPath: "/mnt/conf", ReadOnly: true, Kind: workload.VolumeFiles,
				Files: map[string][]byte{"model": []byte("qwen"), "blob": {0, 1}}},
		},
		{
			"configMap items",
			revision(withVolume("conf", configMapVolume("cfg", false, corev1.KeyToPath{Key: "blob", Path: "bin/blob"}))),
			objects(binary), ResolveOptions{},
			workload.Volume{Name: "conf", MountPath: "/mnt/conf", ReadOnly: true, Kind: workload.VolumeFiles,
				Files: map[string][]byte{"bin/blob": {0, 1}}},
		},
		{
			"optional configMap missing: empty",
			revision(withVolume("conf", configMapVolume("cfg", true))), nil, ResolveOptions{},
			workload.Volume{Name: "conf", MountPath: "/mnt/conf", ReadOnly: true, Kind: workload.VolumeFiles,
				Files: map[string][]byte{}},
		},
		{
			"PVC with host path",
			revision(withVolume("models", claimVolume("weights"))), objects(pvc("weights", "/srv/models")), ResolveOptions{},
			workload.Volume{Name: "models", MountPath: "/mnt/models", Kind: workload.VolumeHostPath, HostPath: "/srv/models"},
		},
		{
			"PVC read-only in the volume",
			revision(withVolume("models", claimVolume("weights")), claimReadOnly), objects(pvc("weights", "/srv/models")), ResolveOptions{},
			workload.Volume{Name: "models", MountPath: "/mnt/models", ReadOnly: true, Kind: workload.VolumeHostPath, HostPath: "/srv/models"},
		},
		{
			"PVC wins over a Dataset of the same name",
			revision(withVolume("models", claimVolume("qwen"))), objects(pvc("qwen", "/srv/qwen"), dataset("qwen", "/nas/qwen")), ResolveOptions{},
			workload.Volume{Name: "models", MountPath: "/mnt/models", Kind: workload.VolumeHostPath, HostPath: "/srv/qwen"},
		},
		{
			"Dataset local://",
			revision(withVolume("models", claimVolume("qwen"))), objects(dataset("qwen", "local:///data/models/qwen/")), ResolveOptions{},
			workload.Volume{Name: "models", MountPath: "/mnt/models", Kind: workload.VolumeHostPath, HostPath: "/data/models/qwen"},
		},
		{
			"Dataset local:// relative",
			revision(withVolume("models", claimVolume("qwen"))), objects(dataset("qwen", "local://models/qwen")), ResolveOptions{},
			workload.Volume{Name: "models", MountPath: "/mnt/models", Kind: workload.VolumeHostPath, HostPath: "/models/qwen"},
		},
		{
			"Dataset absolute path (NAS)",
			revision(withVolume("models", claimVolume("qwen"))), objects(dataset("qwen", "/mnt/nas//qwen")), ResolveOptions{},
			workload.Volume{Name: "models", MountPath: "/mnt/models", Kind: workload.VolumeHostPath, HostPath: "/mnt/nas/qwen"},
		},
		{
			"Dataset through DatasetPath",
			revision(withVolume("models", claimVolume("qwen"))), objects(dataset("qwen", "oss://bucket/qwen")),
			ResolveOptions{DatasetPath: func(_ *servingv1.Revision, d *fluid.Dataset) (string, error) {
				return "/var/cache/infera/" + d.Name, nil
			}},
			workload.Volume{Name: "models", MountPath: "/mnt/models", Kind: workload.VolumeHostPath, HostPath: "/var/cache/infera/qwen"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Resolve(tc.rev, tc.objs, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Volumes) != 1 || !reflect.DeepEqual(got.Volumes[0], tc.want) {
				t.Errorf("volumes = %+v\nwant    [%+v]", got.Volumes, tc.want)
			}
		})
	}
}

func TestResolveProbes(t *testing.T) {
	defaultReadiness := &workload.Probe{Handler: workload.ProbeTCP, Timeout: time.Second, SuccessThreshold: 1, FailureThreshold: 3}
	knativeDefaulted := revision()
	knativeDefaulted.SetDefaults(context.Background())
	health := "health"
	for _, tc := range []struct {
		name                         string
		rev                          *servingv1.Revision
		readiness, liveness, startup *workload.Probe
	}{
		{"none: Knative's TCP readiness probe", revision(), defaultReadiness, nil, nil},
		{"Knative's defaulted probe is the same", knativeDefaulted, defaultReadiness, nil, nil},
		{
			"http readiness",
			revision(container(func(c *corev1.Container) {
				c.ReadinessProbe = &corev1.Probe{
					ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
						Path: "/health", Port: intstr.FromInt32(8080), Scheme: corev1.URISchemeHTTP,
						HTTPHeaders: []corev1.HTTPHeader{{Name: "X-Probe", Value: "1"}},
					}},
					InitialDelaySeconds: 2, PeriodSeconds: 5, TimeoutSeconds: 3, SuccessThreshold: 2, FailureThreshold: 6,
				}
			})),
			&workload.Probe{Handler: workload.ProbeHTTP, Path: "/health", Scheme: "HTTP", Headers: map[string]string{"X-Probe": "1"}, Port: 8080,
				InitialDelay: 2 * time.Second, Period: 5 * time.Second, Timeout: 3 * time.Second, SuccessThreshold: 2, FailureThreshold: 6},
			nil, nil,
		},
		{
			"readiness periodSeconds 0: aggressive",
			revision(container(func(c *corev1.Container) {
				c.ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready"}}}
			})),
			&workload.Probe{Handler: workload.ProbeHTTP, Path: "/ready", Timeout: time.Second, SuccessThreshold: 1, FailureThreshold: 3},
			nil, nil,
		},
		{
			"tcp liveness: period defaults to 10s",
			revision(container(func(c *corev1.Container) {
				c.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(9000)}}}
			})),
			defaultReadiness,
			&workload.Probe{Handler: workload.ProbeTCP, Port: 9000, Period: 10 * time.Second, Timeout: time.Second, SuccessThreshold: 1, FailureThreshold: 3},
			nil,
		},
		{
			"exec startup",
			revision(container(func(c *corev1.Container) {
				c.StartupProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "-f", "/tmp/ready"}}},
					PeriodSeconds: 1, FailureThreshold: 600}
			})),
			defaultReadiness, nil,
			&workload.Probe{Handler: workload.ProbeExec, Command: []string{"test", "-f", "/tmp/ready"}, Period: time.Second, Timeout: time.Second, SuccessThreshold: 1, FailureThreshold: 600},
		},
		{
			"grpc readiness and liveness",
			revision(container(func(c *corev1.Container) {
				g := corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 9090, Service: &health}}
				c.ReadinessProbe = &corev1.Probe{ProbeHandler: g, PeriodSeconds: 2}
				c.LivenessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{GRPC: &corev1.GRPCAction{Port: 9090}}}
			})),
			&workload.Probe{Handler: workload.ProbeGRPC, Port: 9090, Service: "health", Period: 2 * time.Second, Timeout: time.Second, SuccessThreshold: 1, FailureThreshold: 3},
			&workload.Probe{Handler: workload.ProbeGRPC, Port: 9090, Period: 10 * time.Second, Timeout: time.Second, SuccessThreshold: 1, FailureThreshold: 3},
			nil,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Resolve(tc.rev, nil, ResolveOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []struct {
				kind      string
				got, want *workload.Probe
			}{
				{"readiness", got.Container.ReadinessProbe, tc.readiness},
				{"liveness", got.Container.LivenessProbe, tc.liveness},
				{"startup", got.Container.StartupProbe, tc.startup},
			} {
				if !reflect.DeepEqual(p.got, p.want) {
					t.Errorf("%s probe = %+v\nwant %+v", p.kind, p.got, p.want)
				}
			}
		})
	}
}

func TestResolveTimeoutsAndConcurrency(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	for _, tc := range []struct {
		name                             string
		timeout, responseStart, idle, cc *int64
		wantTimeout, wantStart, wantIdle time.Duration
		wantCC                           int
	}{
		{"defaults", nil, nil, nil, nil, workload.DefaultTimeout, 0, 0, 0},
		{"zero is the default", i64(0), i64(0), i64(0), i64(0), workload.DefaultTimeout, 0, 0, 0},
		{"set", i64(600), i64(30), i64(10), i64(4), 600 * time.Second, 30 * time.Second, 10 * time.Second, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rev := revision(func(r *servingv1.Revision) {
				r.Spec.TimeoutSeconds, r.Spec.ResponseStartTimeoutSeconds, r.Spec.IdleTimeoutSeconds = tc.timeout, tc.responseStart, tc.idle
				r.Spec.ContainerConcurrency = tc.cc
			})
			got, err := Resolve(rev, nil, ResolveOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Timeout != tc.wantTimeout || got.ResponseStartTimeout != tc.wantStart || got.IdleTimeout != tc.wantIdle || got.ContainerConcurrency != tc.wantCC {
				t.Errorf("timeout %v, responseStart %v, idle %v, containerConcurrency %d; want %v, %v, %v, %d",
					got.Timeout, got.ResponseStartTimeout, got.IdleTimeout, got.ContainerConcurrency,
					tc.wantTimeout, tc.wantStart, tc.wantIdle, tc.wantCC)
			}
		})
	}
}

func TestResolveCommand(t *testing.T) {
	images := map[string][]string{
		"example.com/llm:1":    {"vllm", "serve"},
		"example.com/infera:1": {"infera", "model-server"},
	}
	for _, tc := range []struct {
		name          string
		image         string
		command, args []string
		opts          ResolveOptions
		wantCommand   []string
		wantArgs      []string
	}{
		{"command", "example.com/llm:1", []string{"serve"}, nil, ResolveOptions{Images: images}, []string{"serve"}, []string{}},
		{"command beats the image mapping", "example.com/llm:1", []string{"llama-server", "-m"}, []string{"/m.gguf"}, ResolveOptions{Images: images},
			[]string{"llama-server"}, []string{"-m", "/m.gguf"}},
		{"$(VAR) left for the supervisor", "x", []string{"serve"}, []string{"--port", "$(PORT)"}, ResolveOptions{},
			[]string{"serve"}, []string{"--port", "$(PORT)"}},
		{"image mapping, then args", "example.com/llm:1", nil, []string{"Qwen/Qwen3-8B"}, ResolveOptions{Images: images},
			[]string{"vllm"}, []string{"serve", "Qwen/Qwen3-8B"}},
		{"infera is Self", "x", []string{"infera", "model-server"}, nil, ResolveOptions{Self: "/usr/local/bin/infera"},
			[]string{"/usr/local/bin/infera"}, []string{"model-server"}},
		{"infera without Self", "x", []string{"infera"}, nil, ResolveOptions{}, []string{"infera"}, []string{}},
		{"mapped infera is Self", "example.com/infera:1", nil, nil, ResolveOptions{Self: "/opt/infera", Images: images},
			[]string{"/opt/infera"}, []string{"model-server"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rev := revision(container(func(c *corev1.Container) { c.Image, c.Command, c.Args = tc.image, tc.command, tc.args }))
			got, err := Resolve(rev, nil, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if c := got.Container; !reflect.DeepEqual(c.Command, tc.wantCommand) || !reflect.DeepEqual(c.Args, tc.wantArgs) {
				t.Errorf("command %q args %q, want %q %q", c.Command, c.Args, tc.wantCommand, tc.wantArgs)
			}
		})
	}
	t.Run("the mapping is not changed", func(t *testing.T) {
		rev := revision(container(func(c *corev1.Container) { c.Image, c.Command = "example.com/infera:1", nil }))
		if _, err := Resolve(rev, nil, ResolveOptions{Self: "/opt/infera", Images: images}); err != nil {
			t.Fatal(err)
		}
		if images["example.com/infera:1"][0] != "infera" {
			t.Errorf("Resolve rewrote the image mapping: %q", images["example.com/infera:1"])
		}
	})
}

// TestResolveRevision: what Resolve copies from the revision's metadata and container.
func TestResolveRevision(t *testing.T) {
	rev := revision(func(r *servingv1.Revision) {
		r.Labels[labelConfigGen] = "7"
		r.Annotations = map[string]string{"autoscaling.knative.dev/target": "10"}
	}, container(func(c *corev1.Container) {
		c.WorkingDir = "/work"
		c.Ports = []corev1.ContainerPort{{Name: "h2c", ContainerPort: 8080}}
		c.Resources.Limits = corev1.ResourceList{manifest.GPUMemResource: resource.MustParse("24")}
	}))
	got, err := Resolve(rev, nil, ResolveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := workload.Revision{
		ID: "default/llm-00001", Namespace: "default", Service: "llm", Configuration: "llm", Name: "llm-00001", Generation: 7,
		Timeout: workload.DefaultTimeout,
		Container: workload.Container{
			Name: "user-container", Image: "example.com/llm:1", Command: []string{"serve"}, Args: []string{}, WorkingDir: "/work",
			Port: 8080, PortName: "h2c", GPUMemGiB: 24,
			Runtime: "process", RuntimeReason: "auto: the container has a command",
			ReadinessProbe: &workload.Probe{Handler: workload.ProbeTCP, Timeout: time.Second, SuccessThreshold: 1, FailureThreshold: 3},
		},
		Annotations: rev.Annotations,
		Labels:      rev.Labels,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Resolve = %+v\nwant      %+v", got, want)
	}
}

func TestImageCommands(t *testing.T) {
	for _, tc := range []struct {
		name string
		cm   *corev1.ConfigMap
		want map[string][]string
	}{
		{"none", nil, map[string][]string{}},
		{
			"split on spaces, blank lines dropped",
			configMap("images", map[string]string{"vllm/vllm-openai:v0.9": "vllm  serve\t--port $(PORT)", "blank": "  "}),
			map[string][]string{"vllm/vllm-openai:v0.9": {"vllm", "serve", "--port", "$(PORT)"}},
		},
		{
			"IMAGE = COMMAND under any key (a valid ConfigMap key cannot hold an image reference)",
			configMap("images", map[string]string{"sd": "registry.example.com/ai/stable-diffusion:v1 = infera model-server --model-dir /data/models"}),
			map[string][]string{"registry.example.com/ai/stable-diffusion:v1": {"infera", "model-server", "--model-dir", "/data/models"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ImageCommands(tc.cm); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ImageCommands = %q, want %q", got, tc.want)
			}
		})
	}
}
