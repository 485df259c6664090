package fluid_test

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/infera-dev/infera/internal/fluid"
)

func validLevel() fluid.Level {
	return fluid.Level{
		MediumType: fluid.MediumSSD,
		VolumeType: fluid.VolumeTypeEmptyDir,
		Path:       "/mnt/ssd0/cache",
		Quota:      ptr(resource.MustParse("100Gi")),
		High:       "0.95",
		Low:        "0.7",
	}
}

// validJindo is the article's JindoRuntime.
func validJindo() *fluid.JindoRuntime {
	return &fluid.JindoRuntime{
		ObjectMeta: metav1.ObjectMeta{Name: "oss-data"},
		Spec: fluid.JindoRuntimeSpec{
			Replicas:    2,
			TieredStore: fluid.TieredStore{Levels: []fluid.Level{validLevel()}},
			Fuse: fluid.JindoFuseSpec{
				Properties:  map[string]string{"fs.jindofsx.data.cache.enable": "true"},
				Args:        []string{"-okernel_cache", "-oro"},
				CleanPolicy: fluid.CleanPolicyOnDemand,
			},
		},
	}
}

func TestJindoRuntimeValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(r *fluid.JindoRuntime)
		want   []string
	}{{
		name:   "valid",
		mutate: func(r *fluid.JindoRuntime) {},
	}, {
		name:   "no tiered store",
		mutate: func(r *fluid.JindoRuntime) { r.Spec.TieredStore = fluid.TieredStore{} },
	}, {
		name:   "name not a DNS-1035 label",
		mutate: func(r *fluid.JindoRuntime) { r.Name = "oss.data" },
		want:   []string{`Error metadata.name: invalid name "oss.data": ` + strings.Join(validation.IsDNS1035Label("oss.data"), "; ")},
	}, {
		name:   "negative replicas",
		mutate: func(r *fluid.JindoRuntime) { r.Spec.Replicas = -1 },
		want:   []string{"Error spec.replicas: must be >= 0, got -1"},
	}, {
		name:   "zero replicas",
		mutate: func(r *fluid.JindoRuntime) { r.Spec.Replicas = 0 },
	}, {
		name:   "negative component replicas",
		mutate: func(r *fluid.JindoRuntime) { r.Spec.Master.Replicas = -1; r.Spec.Worker.Replicas = 3 },
		want:   []string{"Error spec.master.replicas: must be >= 1, got -1"},
	}, {
		name:   "missing medium type",
		mutate: func(r *fluid.JindoRuntime) { r.Spec.TieredStore.Levels[0].MediumType = "" },
		want:   []string{"Error spec.tieredstore.levels[0].mediumtype: missing field(s)"},
	}, {
		name:   "unknown medium type",
		mutate: func(r *fluid.JindoRuntime) { r.Spec.TieredStore.Levels[0].MediumType = "NVME" },
		want:   []string{`Error spec.tieredstore.levels[0].mediumtype: invalid value "NVME": expected one of MEM, SSD, HDD`},
	}, {
		name:   "unknown volume type",
		mutate: func(r *fluid.JindoRuntime) { r.Spec.TieredStore.Levels[0].VolumeType = "volumeTemplate" },
		want:   []string{`Error spec.tieredstore.levels[0].volumeType: invalid value "volumeTemplate": expected one of hostPath, emptyDir`},
	}, {
		name: "volumeSource on a hostPath tier",
		mutate: func(r *fluid.JindoRuntime) {
			l := &r.Spec.TieredStore.Levels[0]
			l.VolumeType = fluid.VolumeTypeHostPath
			l.VolumeSource = &corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory}}
		},
		want: []string{"Warning spec.tieredstore.levels[0].volumeSource: used only when volumeType is emptyDir"},
	}, {
		name:   "missing path",
		mutate: func(r *fluid.JindoRuntime) { r.Spec.TieredStore.Levels[0].Path = "" },
		want:   []string{"Error spec.tieredstore.levels[0].path: missing field(s)"},
	}, {
		name:   "relative path",
		mutate: func(r *fluid.JindoRuntime) { r.Spec.TieredStore.Levels[0].Path = "mnt/ssd0/cache" },
		want:   []string{`Error spec.tieredstore.levels[0].path: cache path "mnt/ssd0/cache" must be absolute`},
	}, {
		name: "several paths with a quota each",
		mutate: func(r *fluid.JindoRuntime) {
			l := &r.Spec.TieredStore.Levels[0]
			l.Path, l.Quota, l.QuotaList = "/mnt/disk1,/mnt/disk2", nil, "100Gi,50Gi"
		},
	}, {
		name: "several paths sharing a quota",
		mutate: func(r *fluid.JindoRuntime) {
			r.Spec.TieredStore.Levels[0].Path = "/mnt/disk1,/mnt/disk2"
		},
	}, {
		name: "empty and relative paths in a list",
		mutate: func(r *fluid.JindoRuntime) {
			r.Spec.TieredStore.Levels[0].Path = "/mnt/disk1,,disk3"
		},
		want: []string{
			`Error spec.tieredstore.levels[0].path: cache path "" must be absolute`,
			`Error spec.tieredstore.levels[0].path: cache path "disk3" must be absolute`,
		},
	}, {
		name: "quotaList shorter than paths",
		mutate: func(r *fluid.JindoRuntime) {
			l := &r.Spec.TieredStore.Levels[0]
			l.Path, l.Quota, l.QuotaList = "/mnt/disk1,/mnt/disk2", nil, "100Gi"
		},
		want: []string{"Error spec.tieredstore.levels[0].quotaList: has 1 quotas for 2 paths: give one quota per path"},
	}, {
		name: "quotaList with a bad and a zero quantity",
		mutate: func(r *fluid.JindoRuntime) {
			l := &r.Spec.TieredStore.Levels[0]
			l.Path, l.Quota, l.QuotaList = "/mnt/disk1,/mnt/disk2", nil, "100GB,0"
		},
		want: []string{
			`Error spec.tieredstore.levels[0].quotaList: invalid quantity "100GB"`,
			`Error spec.tieredstore.levels[0].quotaList: quota "0" must be greater than 0`,
		},
	}, {
		name:   "quotaList and quota",
		mutate: func(r *fluid.JindoRuntime) { r.Spec.TieredStore.Levels[0].QuotaList = "10Gi" },
		want:   []string{"Warning spec.tieredstore.levels[0].quota: ignored: quotaList overrides quota"},
	}, {
		name:   "neither quota nor quotaList",
		mutate: func(r *fluid.JindoRuntime) { r.Spec.TieredStore.Levels[0].Quota = nil },
		want:   []string{"Error spec.tieredstore.levels[0].quota: quota or quotaList is required"},
	}, {
		name:   "zero quota",
		mutate: func(r *fluid.JindoRuntime) { r.Spec.TieredStore.Levels[0].Quota = ptr(resource.MustParse("0")) },
		want:   []string{"Error spec.tieredstore.levels[0].quota: must be greater than 0, got 0"},
	}, {
		name:   "negative quota",
		mutate: func(r *fluid.JindoRuntime) { r.Spec.TieredStore.Levels[0].Quota = ptr(resource.MustParse("-1Gi")) },
		want:   []string{"Error spec.tieredstore.levels[0].quota: must be greater than 0, got -1Gi"},
	}, {
		name: "watermarks unset",
		mutate: func(r *fluid.JindoRuntime) {
			r.Spec.TieredStore.Levels[0].High, r.Spec.TieredStore.Levels[0].Low = "", ""
		},
	}, {
		name:   "only high",
		mutate: func(r *fluid.JindoRuntime) { r.Spec.TieredStore.Levels[0].Low = "" },
	}, {
		name: "high of 1 and low of 0",
		mutate: func(r *fluid.JindoRuntime) {
			r.Spec.TieredStore.Levels[0].High, r.Spec.TieredStore.Levels[0].Low = "1", "0"
		},
	}, {
		name:   "high not a number",
		mutate: func(r *fluid.JindoRuntime) { r.Spec.TieredStore.Levels[0].High = "95%" },
		want:   []string{`Error spec.tieredstore.levels[0].high: must be a ratio with 0 < high <= 1, got "95%"`},
	}, {
		name:   "high above 1",
		mutate: func(r *fluid.JindoRuntime) { r.Spec.TieredStore.Levels[0].High = "1.5" },
		want:   []string{`Error spec.tieredstore.levels[0].high: must be a ratio with 0 < high <= 1, got "1.5"`},
	}, {
		name: "high of 0",
		mutate: func(r *fluid.JindoRuntime) {
			r.Spec.TieredStore.Levels[0].High, r.Spec.TieredStore.Levels[0].Low = "0", ""
		},
		want: []string{`Error spec.tieredstore.levels[0].high: must be a ratio with 0 < high <= 1, got "0"`},
	}, {
		name:   "negative low",
		mutate: func(r *fluid.JindoRuntime) { r.Spec.TieredStore.Levels[0].Low = "-0.1" },
		want:   []string{`Error spec.tieredstore.levels[0].low: must be a ratio with 0 <= low < 1, got "-0.1"`},
	}, {
		name: "low of 1",
		mutate: func(r *fluid.JindoRuntime) {
			r.Spec.TieredStore.Levels[0].High, r.Spec.TieredStore.Levels[0].Low = "", "1"
		},
		want: []string{`Error spec.tieredstore.levels[0].low: must be a ratio with 0 <= low < 1, got "1"`},
	}, {
		name:   "low equal to high",
		mutate: func(r *fluid.JindoRuntime) { r.Spec.TieredStore.Levels[0].Low = "0.95" },
		want:   []string{`Error spec.tieredstore.levels[0].low: must be less than high ("0.95"), got "0.95"`},
	}, {
		name: "low above high",
		mutate: func(r *fluid.JindoRuntime) {
			r.Spec.TieredStore.Levels[0].High, r.Spec.TieredStore.Levels[0].Low = "0.5", "0.7"
		},
		want: []string{`Error spec.tieredstore.levels[0].low: must be less than high ("0.5"), got "0.7"`},
	}, {
		name: "second level",
		mutate: func(r *fluid.JindoRuntime) {
			mem := validLevel()
			mem.MediumType = fluid.MediumMemory
			r.Spec.TieredStore.Levels = append(r.Spec.TieredStore.Levels, mem)
		},
		want: []string{"Warning spec.tieredstore.levels[1]: ignored: JindoRuntime uses only levels[0]"},
	}, {
		name: "duplicate medium type",
		mutate: func(r *fluid.JindoRuntime) {
			r.Spec.TieredStore.Levels = append(r.Spec.TieredStore.Levels, validLevel())
		},
		want: []string{
			`Error spec.tieredstore.levels[1].mediumtype: duplicate medium type "SSD" (also levels[0])`,
			"Warning spec.tieredstore.levels[1]: ignored: JindoRuntime uses only levels[0]",
		},
	}, {
		name:   "unknown clean policy",
		mutate: func(r *fluid.JindoRuntime) { r.Spec.Fuse.CleanPolicy = "OnFuseChanged" },
		want:   []string{`Error spec.fuse.cleanPolicy: invalid value "OnFuseChanged": expected one of OnDemand, OnRuntimeDeleted`},
	}, {
		name:   "unknown network mode",
		mutate: func(r *fluid.JindoRuntime) { r.Spec.NetworkMode = "Host" },
		want:   []string{`Error spec.networkmode: invalid value "Host": expected one of HostNetwork, ContainerNetwork`},
	}, {
		name: "unknown pull policies",
		mutate: func(r *fluid.JindoRuntime) {
			r.Spec.JindoVersion.ImagePullPolicy = "always"
			r.Spec.Fuse.ImagePullPolicy = "IfNotPresent"
		},
		want: []string{`Error spec.jindoVersion.imagePullPolicy: invalid value "always": expected one of Always, IfNotPresent, Never`},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := validJindo()
			tt.mutate(r)
			checkDiags(t, r.Validate(), tt.want)
		})
	}
}

func TestAlluxioRuntimeValidate(t *testing.T) {
	valid := func() *fluid.AlluxioRuntime {
		mem := validLevel()
		mem.MediumType, mem.Path, mem.Quota = fluid.MediumMemory, "/dev/shm", ptr(resource.MustParse("2Gi"))
		return &fluid.AlluxioRuntime{
			ObjectMeta: metav1.ObjectMeta{Name: "hbase"},
			Spec: fluid.AlluxioRuntimeSpec{
				Replicas:    2,
				TieredStore: fluid.TieredStore{Levels: []fluid.Level{mem, validLevel()}},
			},
		}
	}
	tests := []struct {
		name   string
		mutate func(r *fluid.AlluxioRuntime)
		want   []string
	}{{
		name:   "valid with two tiers",
		mutate: func(r *fluid.AlluxioRuntime) {},
	}, {
		name:   "second tier with a relative path",
		mutate: func(r *fluid.AlluxioRuntime) { r.Spec.TieredStore.Levels[1].Path = "ssd" },
		want:   []string{`Error spec.tieredstore.levels[1].path: cache path "ssd" must be absolute`},
	}, {
		name:   "negative replicas",
		mutate: func(r *fluid.AlluxioRuntime) { r.Spec.Replicas = -2; r.Spec.Data.Replicas = -1 },
		want:   []string{"Error spec.replicas: must be >= 0, got -2", "Error spec.data.replicas: must be >= 0, got -1"},
	}, {
		name: "component settings",
		mutate: func(r *fluid.AlluxioRuntime) {
			r.Spec.JobWorker.Replicas = -1
			r.Spec.APIGateway.NetworkMode = "host"
			r.Spec.Fuse.NetworkMode = fluid.ContainerNetwork
		},
		want: []string{
			"Error spec.jobWorker.replicas: must be >= 1, got -1",
			`Error spec.apiGateway.networkMode: invalid value "host": expected one of HostNetwork, ContainerNetwork`,
		},
	}, {
		name:   "fuse clean policy",
		mutate: func(r *fluid.AlluxioRuntime) { r.Spec.Fuse.CleanPolicy = "Never" },
		want:   []string{`Error spec.fuse.cleanPolicy: invalid value "Never": expected one of OnDemand, OnRuntimeDeleted`},
	}, {
		name:   "init users pull policy",
		mutate: func(r *fluid.AlluxioRuntime) { r.Spec.InitUsers.ImagePullPolicy = "Sometimes" },
		want:   []string{`Error spec.initUsers.imagePullPolicy: invalid value "Sometimes": expected one of Always, IfNotPresent, Never`},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := valid()
			tt.mutate(r)
			checkDiags(t, r.Validate(), tt.want)
		})
	}
}

func TestJuiceFSRuntimeValidate(t *testing.T) {
	valid := func() *fluid.JuiceFSRuntime {
		l := validLevel()
		l.VolumeType = ""
		return &fluid.JuiceFSRuntime{
			ObjectMeta: metav1.ObjectMeta{Name: "jfsdemo"},
			Spec: fluid.JuiceFSRuntimeSpec{
				Replicas:    1,
				TieredStore: fluid.TieredStore{Levels: []fluid.Level{l}},
				Fuse:        fluid.JuiceFSFuseSpec{CleanPolicy: fluid.CleanPolicyOnFuseChanged},
			},
		}
	}
	tests := []struct {
		name   string
		mutate func(r *fluid.JuiceFSRuntime)
		want   []string
	}{{
		name:   "valid, OnFuseChanged",
		mutate: func(r *fluid.JuiceFSRuntime) {},
	}, {
		name:   "unknown clean policy",
		mutate: func(r *fluid.JuiceFSRuntime) { r.Spec.Fuse.CleanPolicy = "OnDelete" },
		want:   []string{`Error spec.fuse.cleanPolicy: invalid value "OnDelete": expected one of OnDemand, OnRuntimeDeleted, OnFuseChanged`},
	}, {
		name: "tiers and workers",
		mutate: func(r *fluid.JuiceFSRuntime) {
			r.Spec.TieredStore.Levels[0].Low = "2"
			r.Spec.Worker.Replicas = -3
			r.Spec.Worker.NetworkMode = "Container"
		},
		want: []string{
			`Error spec.tieredstore.levels[0].low: must be a ratio with 0 <= low < 1, got "2"`,
			"Error spec.worker.replicas: must be >= 1, got -3",
			`Error spec.worker.networkMode: invalid value "Container": expected one of HostNetwork, ContainerNetwork`,
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := valid()
			tt.mutate(r)
			checkDiags(t, r.Validate(), tt.want)
		})
	}
}

func TestRuntimeSetDefaults(t *testing.T) {
	level := fluid.Level{MediumType: fluid.MediumMemory, Path: "/dev/shm", Quota: ptr(resource.MustParse("1Gi"))}
	set := validLevel() // volumeType emptyDir stays
	jindo := &fluid.JindoRuntime{Spec: fluid.JindoRuntimeSpec{TieredStore: fluid.TieredStore{Levels: []fluid.Level{level, set}}}}
	alluxio := &fluid.AlluxioRuntime{Spec: fluid.AlluxioRuntimeSpec{TieredStore: fluid.TieredStore{Levels: []fluid.Level{level}}}}
	juicefs := &fluid.JuiceFSRuntime{Spec: fluid.JuiceFSRuntimeSpec{Fuse: fluid.JuiceFSFuseSpec{CleanPolicy: fluid.CleanPolicyOnDemand}}}
	jindo.SetDefaults()
	alluxio.SetDefaults()
	juicefs.SetDefaults()

	for _, got := range []struct {
		what      string
		got, want any
	}{
		{"jindo levels[0].volumeType", jindo.Spec.TieredStore.Levels[0].VolumeType, fluid.VolumeTypeHostPath},
		{"jindo levels[1].volumeType", jindo.Spec.TieredStore.Levels[1].VolumeType, fluid.VolumeTypeEmptyDir},
		{"jindo fuse.cleanPolicy", jindo.Spec.Fuse.CleanPolicy, fluid.CleanPolicyOnRuntimeDeleted},
		{"alluxio levels[0].volumeType", alluxio.Spec.TieredStore.Levels[0].VolumeType, fluid.VolumeTypeHostPath},
		{"alluxio fuse.cleanPolicy", alluxio.Spec.Fuse.CleanPolicy, fluid.CleanPolicyOnRuntimeDeleted},
		{"juicefs fuse.cleanPolicy", juicefs.Spec.Fuse.CleanPolicy, fluid.CleanPolicyOnDemand},
	} {
		if got.got != got.want {
			t.Errorf("%s = %v, want %v", got.what, got.got, got.want)
		}
	}
}
