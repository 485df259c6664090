package reconciler

import (
	"errors"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

func noCommand(c *corev1.Container) { c.Command = nil }

func annotate(k, v string) func(*servingv1.Revision) {
	return func(r *servingv1.Revision) {
		if r.Annotations == nil {
			r.Annotations = map[string]string{}
		}
		r.Annotations[k] = v
	}
}

func TestChooseRuntime(t *testing.T) {
	const engine = "unix:///var/run/docker.sock"
	mapped := map[string][]string{"example.com/llm:1": {"serve"}}
	tests := []struct {
		name       string
		rev        *servingv1.Revision
		opts       ResolveOptions
		runtime    string
		reason     string
		command    []string // the resolved Command
		errContain string
	}{
		{"command, engine: process", revision(), ResolveOptions{Engine: engine}, "process", "auto: the container has a command", []string{"serve"}, ""},
		{"no command, engine: docker", revision(container(noCommand)), ResolveOptions{Engine: engine}, "docker", "auto: no command, container engine at " + engine, nil, ""},
		{"no command, mapped: process", revision(container(noCommand)), ResolveOptions{Engine: engine, Images: mapped}, "process", "auto: image mapped to a command in ConfigMap infera-system/images", []string{"serve"}, ""},
		{"flag docker keeps the command as entrypoint", revision(), ResolveOptions{Engine: engine, Runtime: "docker"}, "docker", "infera up --runtime=docker", []string{"serve"}, ""},
		{"flag process", revision(container(noCommand)), ResolveOptions{Engine: engine, Runtime: "process", Images: mapped}, "process", "infera up --runtime=process", []string{"serve"}, ""},
		{"annotation beats flag", revision(container(noCommand), annotate(RuntimeAnnotation, "docker")), ResolveOptions{Engine: engine, Runtime: "process"}, "docker", "annotation infera.dev/runtime: docker", nil, ""},
		{"annotation docker, no engine", revision(annotate(RuntimeAnnotation, "docker")), ResolveOptions{}, "", "", nil, "no container engine answered"},
		{"bad annotation", revision(annotate(RuntimeAnnotation, "vm")), ResolveOptions{}, "", "", nil, `"vm" is not a runtime`},
		{"no command, no engine", revision(container(noCommand)), ResolveOptions{}, "", "", nil, "or start a container engine (dockerd)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Resolve(tt.rev, objects(), tt.opts)
			if tt.errContain != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errContain) || !errors.Is(err, ErrUnresolvable) {
					t.Fatalf("err = %v, want an ErrUnresolvable containing %q", err, tt.errContain)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := got.Container
			if c.Runtime != tt.runtime || c.RuntimeReason != tt.reason || !slices.Equal(c.Command, tt.command) {
				t.Errorf("runtime %q (%q), command %q; want %q (%q), %q", c.Runtime, c.RuntimeReason, c.Command, tt.runtime, tt.reason, tt.command)
			}
		})
	}
}

func TestResolveContainerFields(t *testing.T) {
	yes, no := true, false
	uid, gid, podUID := int64(1000), int64(2000), int64(7)
	rev := revision(
		container(func(c *corev1.Container) {
			c.Command = nil
			c.Args = []string{"--port=$(PORT)"}
			c.ImagePullPolicy = corev1.PullNever
			c.Resources = corev1.ResourceRequirements{
				Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1500m"), corev1.ResourceMemory: resource.MustParse("512Mi"), "nvidia.com/gpu": resource.MustParse("2")},
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")},
			}
			c.SecurityContext = &corev1.SecurityContext{
				RunAsUser: &uid, RunAsGroup: &gid, ReadOnlyRootFilesystem: &yes, AllowPrivilegeEscalation: &no,
				Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}, Drop: []corev1.Capability{"ALL"}},
			}
		}),
		func(r *servingv1.Revision) {
			r.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: &podUID, RunAsNonRoot: &yes}
			r.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
			r.Status.ContainerStatuses = []servingv1.ContainerStatus{{Name: "user-container", ImageDigest: "example.com/llm@sha256:abc"}}
		},
		annotate(ImageCacheAnnotation, "true"),
	)
	cfg := `{"auths":{"example.com":{"auth":"dTpw"}}}`
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "regcred", Namespace: "default"}, Type: corev1.SecretTypeDockerConfigJson,
		Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(cfg)}}
	opts := ResolveOptions{Engine: "unix:///run/docker.sock"}

	if _, err := Resolve(rev, objects(), opts); !errors.Is(err, ErrWaiting) || !strings.Contains(err.Error(), `secret "regcred" not found`) {
		t.Fatalf("without the pull secret: err = %v, want a wait naming it", err)
	}
	got, err := Resolve(rev, objects(secret), opts)
	if err != nil {
		t.Fatal(err)
	}
	c := got.Container
	if c.Runtime != "docker" || len(c.Command) != 0 || !slices.Equal(c.Args, []string{"--port=$(PORT)"}) {
		t.Errorf("runtime %q command %q args %q", c.Runtime, c.Command, c.Args)
	}
	if c.ImagePullPolicy != "Never" || !c.FromImageCache || c.ImageDigest != "example.com/llm@sha256:abc" || c.GPUs != 2 {
		t.Errorf("policy %q cache %v digest %q gpus %d", c.ImagePullPolicy, c.FromImageCache, c.ImageDigest, c.GPUs)
	}
	if r := c.Resources; r.CPULimitMilli != 1500 || r.CPURequestMilli != 250 || r.MemoryLimit != 512<<20 {
		t.Errorf("resources %+v", r)
	}
	s := c.Security
	if *s.RunAsUser != 1000 || *s.RunAsGroup != 2000 || !s.RunAsNonRoot || !s.ReadOnlyRootFilesystem || *s.AllowPrivilegeEscalation ||
		!slices.Equal(s.CapAdd, []string{"NET_ADMIN"}) || !slices.Equal(s.CapDrop, []string{"ALL"}) {
		t.Errorf("security %+v", s)
	}
	if len(c.PullSecrets) != 1 || string(c.PullSecrets[0]) != cfg {
		t.Errorf("pull secrets %q", c.PullSecrets)
	}
}
