package dockerrt

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/mount"
	"github.com/moby/moby/api/types/network"

	"github.com/infera-dev/infera/internal/container"
	"github.com/infera-dev/infera/internal/supervisor"
	"github.com/infera-dev/infera/internal/workload"
)

func TestPullPolicy(t *testing.T) {
	tests := []struct{ image, policy, want string }{
		{"app", "", "Always"},
		{"app:latest", "", "Always"},
		{"app:v1", "", "IfNotPresent"},
		{"127.0.0.1:5000/app", "", "Always"}, // a registry port is not a tag
		{"127.0.0.1:5000/app:v1", "", "IfNotPresent"},
		{"127.0.0.1:5000/app@sha256:abc", "", "IfNotPresent"},
		{"app:v1", "Always", "Always"},
		{"app", "Never", "Never"},
	}
	for _, tt := range tests {
		if got := PullPolicy(tt.image, tt.policy); got != tt.want {
			t.Errorf("PullPolicy(%q, %q) = %q, want %q", tt.image, tt.policy, got, tt.want)
		}
	}
}

func i64(v int64) *int64 { return &v }
func bptr(v bool) *bool  { return &v }

func TestSpec(t *testing.T) {
	rt, err := NewRuntime(RuntimeConfig{Engine: &container.Engine{}, StateDir: "/var/lib/infera"})
	if err != nil {
		t.Fatal(err)
	}
	base := supervisor.Launch{
		Replica:  "app-00001-x7k2q",
		Revision: workload.Revision{ID: "default/app-00001", Container: workload.Container{Image: "app:v1", WorkingDir: "/w"}},
		Command:  []string{"/app"},
		Args:     []string{"--port=8123"},
		Env:      []string{"PORT=8123"},
		Binds:    []supervisor.Bind{{Volume: "m", Source: "/data/m", Target: "/models", ReadOnly: true}},
	}
	with := func(edit func(*workload.Container)) supervisor.Launch {
		l := base
		edit(&l.Revision.Container)
		return l
	}
	tests := []struct {
		name    string
		launch  supervisor.Launch
		img     container.Image
		check   func(t *testing.T, s container.Spec)
		wantErr string
	}{
		{"basics", base, container.Image{ID: "sha256:1"}, func(t *testing.T, s container.Spec) {
			if s.Name != "infera-app-00001-x7k2q" || s.Image != "sha256:1" || !slices.Equal(s.Entrypoint, []string{"/app"}) || !slices.Equal(s.Cmd, []string{"--port=8123"}) || s.WorkingDir != "/w" {
				t.Errorf("spec %+v", s)
			}
			if s.Labels[container.LabelStateDir] != "/var/lib/infera" || s.Labels[container.LabelRevision] != "default/app-00001" || s.Labels[container.LabelReplica] != "app-00001-x7k2q" {
				t.Errorf("labels %v", s.Labels)
			}
			cc := s.CreateConfig()
			if cc.HostConfig.NetworkMode != network.NetworkHost || len(cc.HostConfig.Mounts) != 1 ||
				cc.HostConfig.Mounts[0].Type != mount.TypeBind || !cc.HostConfig.Mounts[0].ReadOnly {
				t.Errorf("host config %+v", cc.HostConfig)
			}
			if cc.HostConfig.RestartPolicy.Name != "" && cc.HostConfig.RestartPolicy.Name != "no" {
				t.Errorf("restart policy %q: the supervisor restarts, not the engine", cc.HostConfig.RestartPolicy.Name)
			}
		}, ""},
		{"no command: the image's entrypoint and cmd", func() supervisor.Launch { l := base; l.Command, l.Args = nil, nil; return l }(), container.Image{ID: "sha256:1"}, func(t *testing.T, s container.Spec) {
			if s.Entrypoint != nil || s.Cmd != nil {
				t.Errorf("entrypoint %q cmd %q, want nil (the image's)", s.Entrypoint, s.Cmd)
			}
		}, ""},
		{"limits", with(func(c *workload.Container) {
			c.Resources = workload.Resources{CPULimitMilli: 1500, CPURequestMilli: 1, MemoryLimit: 1 << 30}
		}), container.Image{}, func(t *testing.T, s container.Spec) {
			if s.NanoCPUs != 1_500_000_000 || s.CPUShares != 2 || s.MemoryBytes != 1<<30 {
				t.Errorf("limits %d %d %d", s.NanoCPUs, s.CPUShares, s.MemoryBytes)
			}
		}, ""},
		{"security", with(func(c *workload.Container) {
			c.Security = workload.Security{RunAsUser: i64(1000), RunAsGroup: i64(2000), RunAsNonRoot: true, ReadOnlyRootFilesystem: true,
				AllowPrivilegeEscalation: bptr(false), CapAdd: []string{"NET_ADMIN"}, CapDrop: []string{"ALL"}}
		}), container.Image{}, func(t *testing.T, s container.Spec) {
			if s.User != "1000:2000" || !s.ReadOnlyRootFS || !s.NoNewPrivs || !slices.Equal(s.CapAdd, []string{"NET_ADMIN"}) || !slices.Equal(s.CapDrop, []string{"ALL"}) {
				t.Errorf("security %+v", s)
			}
			if !slices.Contains(s.CreateConfig().HostConfig.SecurityOpt, "no-new-privileges") {
				t.Error("no no-new-privileges")
			}
		}, ""},
		{"group only keeps the image's user", with(func(c *workload.Container) { c.Security.RunAsGroup = i64(5) }), container.Image{User: "app"}, func(t *testing.T, s container.Spec) {
			if s.User != "app:5" {
				t.Errorf("user %q", s.User)
			}
		}, ""},
		{"runAsNonRoot, image runs as root", with(func(c *workload.Container) { c.Security.RunAsNonRoot = true }), container.Image{User: ""}, nil, "runAsNonRoot and image will run as root"},
		{"runAsNonRoot, named user", with(func(c *workload.Container) { c.Security.RunAsNonRoot = true }), container.Image{User: "app"}, nil, "non-numeric user (app)"},
		{"runAsNonRoot, numeric image user", with(func(c *workload.Container) { c.Security.RunAsNonRoot = true }), container.Image{User: "1000:1000"}, func(t *testing.T, s container.Spec) {}, ""},
		{"privileged refused", with(func(c *workload.Container) { c.Security.Privileged = true }), container.Image{}, nil, "--allow-privileged"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := rt.spec(tt.launch, tt.img)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, s)
		})
	}
}

func TestLinkFarm(t *testing.T) {
	host := t.TempDir()
	farm := t.TempDir()
	if err := os.MkdirAll(filepath.Join(farm, "models"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(host, filepath.Join(farm, "models", "sd")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(farm, "base")); err != nil {
		t.Fatal(err)
	}
	got := linkFarm(farm)
	if len(got) != 2 || got[0] != (farmLink{"base", "/etc"}) || got[1] != (farmLink{"models/sd", host}) {
		t.Fatalf("linkFarm = %+v", got)
	}
	rt, err := NewRuntime(RuntimeConfig{Engine: &container.Engine{}, StateDir: "/s"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := rt.spec(supervisor.Launch{Binds: []supervisor.Bind{{Source: farm, Target: "/data", ReadOnly: true}}}, container.Image{})
	if err != nil {
		t.Fatal(err)
	}
	want := []container.Mount{{Source: "/etc", Target: "/data/base", ReadOnly: true}, {Source: host, Target: "/data/models/sd", ReadOnly: true}}
	if !slices.Equal(s.Mounts, want) {
		t.Errorf("mounts %+v, want each link's target bound where the link is: %+v", s.Mounts, want)
	}

	// Anything with a file, or a relative link, is not a farm: bound as it is.
	plain := t.TempDir()
	os.WriteFile(filepath.Join(plain, "config.json"), []byte("{}"), 0o644)
	os.Symlink(host, filepath.Join(plain, "weights"))
	if got := linkFarm(plain); got != nil {
		t.Errorf("a directory with a file: %+v", got)
	}
	rel := t.TempDir()
	os.Symlink("../x", filepath.Join(rel, "x"))
	if got := linkFarm(rel); got != nil {
		t.Errorf("a relative link: %+v", got)
	}
	if got := linkFarm(t.TempDir()); got != nil {
		t.Errorf("an empty directory: %+v", got)
	}
}
