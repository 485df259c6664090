package fluid_test

import (
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/infera-dev/infera/internal/fluid"
)

func secretOpt(name string) fluid.EncryptOption {
	return fluid.EncryptOption{
		Name:      name,
		ValueFrom: fluid.EncryptOptionSource{SecretKeyRef: fluid.SecretKeySelector{Name: "access-key", Key: name}},
	}
}

// validDataset is an OSS dataset with its endpoint and credentials in order.
func validDataset() *fluid.Dataset {
	return &fluid.Dataset{
		ObjectMeta: metav1.ObjectMeta{Name: "oss-data", Namespace: "default"},
		Spec: fluid.DatasetSpec{
			Mounts: []fluid.Mount{{
				MountPoint:     "oss://my-bucket/models/sd",
				Name:           "sd",
				Options:        map[string]string{"fs.oss.endpoint": "oss-cn-beijing.aliyuncs.com"},
				EncryptOptions: []fluid.EncryptOption{secretOpt("fs.oss.accessKeyId"), secretOpt("fs.oss.accessKeySecret")},
			}},
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany},
		},
	}
}

const schemes = "oss://, s3://, s3a://, cos://, cosn://, obs://, gs://, wasb://, wasbs://, abfs://, abfss://, " +
	"hdfs://, juicefs://, nfs://, local://, pvc://, http://, https://, dataset://"

func TestDatasetValidate(t *testing.T) {
	dns1035 := strings.Join(validation.IsDNS1035Label("20-hbase"), "; ")
	tests := []struct {
		name   string
		mutate func(d *fluid.Dataset)
		want   []string
	}{{
		name:   "valid",
		mutate: func(d *fluid.Dataset) {},
	}, {
		name:   "name not a DNS-1035 label",
		mutate: func(d *fluid.Dataset) { d.Name = "20-hbase" },
		want:   []string{`Error metadata.name: invalid name "20-hbase": ` + dns1035},
	}, {
		name:   "no mounts",
		mutate: func(d *fluid.Dataset) { d.Spec.Mounts = nil },
		want:   []string{"Error spec.mounts: missing field(s)"},
	}, {
		name:   "missing mount point",
		mutate: func(d *fluid.Dataset) { d.Spec.Mounts[0].MountPoint = "" },
		want:   []string{"Error spec.mounts[0].mountPoint: missing field(s)"},
	}, {
		name:   "unknown scheme",
		mutate: func(d *fluid.Dataset) { d.Spec.Mounts[0].MountPoint = "ftp://host/models" },
		want:   []string{`Error spec.mounts[0].mountPoint: unsupported mount point "ftp://host/models": expected ` + schemes + " or an absolute path"},
	}, {
		name:   "neither scheme nor absolute path",
		mutate: func(d *fluid.Dataset) { d.Spec.Mounts[0].MountPoint = "my-bucket/models" },
		want:   []string{`Error spec.mounts[0].mountPoint: unsupported mount point "my-bucket/models": expected ` + schemes + " or an absolute path"},
	}, {
		name:   "oss without bucket",
		mutate: func(d *fluid.Dataset) { d.Spec.Mounts[0].MountPoint = "oss:///models" },
		want:   []string{"Error spec.mounts[0].mountPoint: oss:// mount point must name a bucket: oss://<bucket>/<path>"},
	}, {
		name:   "s3 without bucket",
		mutate: func(d *fluid.Dataset) { d.Spec.Mounts[0] = fluid.Mount{MountPoint: "s3://", Name: "s3"} },
		want:   []string{"Error spec.mounts[0].mountPoint: s3:// mount point must name a bucket: s3://<bucket>/<path>"},
	}, {
		name:   "local with relative path",
		mutate: func(d *fluid.Dataset) { d.Spec.Mounts[0] = fluid.Mount{MountPoint: "local://mnt/data", Name: "local"} },
		want:   []string{"Error spec.mounts[0].mountPoint: local:// mount point must be an absolute path: local:///<path>"},
	}, {
		name:   "pvc without claim",
		mutate: func(d *fluid.Dataset) { d.Spec.Mounts[0] = fluid.Mount{MountPoint: "pvc://", Name: "nas"} },
		want:   []string{"Error spec.mounts[0].mountPoint: pvc:// mount point must name a claim: pvc://<claim>/<subpath>"},
	}, {
		name:   "pvc with invalid claim name",
		mutate: func(d *fluid.Dataset) { d.Spec.Mounts[0] = fluid.Mount{MountPoint: "pvc://Models_NAS/sd", Name: "nas"} },
		want: []string{`Error spec.mounts[0].mountPoint: invalid claim name "Models_NAS": ` +
			strings.Join(validation.IsDNS1123Subdomain("Models_NAS"), "; ")},
	}, {
		name:   "dataset reference without name",
		mutate: func(d *fluid.Dataset) { d.Spec.Mounts[0] = fluid.Mount{MountPoint: "dataset://default", Name: "ref"} },
		want:   []string{"Error spec.mounts[0].mountPoint: dataset:// mount point must name a dataset: dataset://<namespace>/<name>"},
	}, {
		name: "dataset reference next to another mount",
		mutate: func(d *fluid.Dataset) {
			d.Spec.Mounts = append(d.Spec.Mounts, fluid.Mount{MountPoint: "dataset://default/phy", Name: "ref"})
		},
		want: []string{"Error spec.mounts[1].mountPoint: a dataset:// mount must be the dataset's only mount"},
	}, {
		name:   "https without host",
		mutate: func(d *fluid.Dataset) { d.Spec.Mounts[0] = fluid.Mount{MountPoint: "https:///spark/", Name: "web"} },
		want:   []string{"Error spec.mounts[0].mountPoint: https:// mount point must name a host"},
	}, {
		name:   "oss without endpoint",
		mutate: func(d *fluid.Dataset) { d.Spec.Mounts[0].Options = nil },
		want:   []string{"Error spec.mounts[0].options[fs.oss.endpoint]: required for oss:// mount points (in options or sharedOptions)"},
	}, {
		name:   "oss with empty endpoint",
		mutate: func(d *fluid.Dataset) { d.Spec.Mounts[0].Options["fs.oss.endpoint"] = "" },
		want:   []string{"Error spec.mounts[0].options[fs.oss.endpoint]: required for oss:// mount points (in options or sharedOptions)"},
	}, {
		name: "oss endpoint in sharedOptions",
		mutate: func(d *fluid.Dataset) {
			d.Spec.SharedOptions = d.Spec.Mounts[0].Options
			d.Spec.Mounts[0].Options = nil
		},
	}, {
		name: "oss credentials in plain options",
		mutate: func(d *fluid.Dataset) {
			d.Spec.Mounts[0].EncryptOptions = nil
			d.Spec.Mounts[0].Options["fs.oss.accessKeyId"] = "id"
			d.Spec.Mounts[0].Options["fs.oss.accessKeySecret"] = "secret"
		},
		want: []string{
			"Error spec.mounts[0].options[fs.oss.accessKeyId]: credential in plain text: set it with encryptOptions and a secretKeyRef",
			"Error spec.mounts[0].options[fs.oss.accessKeySecret]: credential in plain text: set it with encryptOptions and a secretKeyRef",
		},
	}, {
		name: "s3 credentials in plain options",
		mutate: func(d *fluid.Dataset) {
			d.Spec.Mounts[0] = fluid.Mount{MountPoint: "s3://bucket/models", Name: "s3", Options: map[string]string{
				"alluxio.underfs.s3.region": "us-east-1", "aws.accessKeyId": "id", "aws.secretKey": "secret",
			}}
		},
		want: []string{
			"Error spec.mounts[0].options[aws.accessKeyId]: credential in plain text: set it with encryptOptions and a secretKeyRef",
			"Error spec.mounts[0].options[aws.secretKey]: credential in plain text: set it with encryptOptions and a secretKeyRef",
		},
	}, {
		name: "juicefs metaurl in plain options",
		mutate: func(d *fluid.Dataset) {
			d.Spec.Mounts[0] = fluid.Mount{MountPoint: "juicefs:///", Name: "jfs", Options: map[string]string{
				"bucket": "http://minio:9000/test", "metaurl": "redis://:pw@redis:6379/0",
			}}
		},
		want: []string{"Error spec.mounts[0].options[metaurl]: credential in plain text: set it with encryptOptions and a secretKeyRef"},
	}, {
		name: "credential in plain sharedOptions",
		mutate: func(d *fluid.Dataset) {
			d.Spec.SharedOptions = map[string]string{"fs.oss.accessKeySecret": "secret"}
		},
		want: []string{
			"Error spec.sharedOptions[fs.oss.accessKeySecret]: credential in plain text: set it with sharedEncryptOptions and a secretKeyRef",
			`Error spec.mounts[0].encryptOptions[1].name: option "fs.oss.accessKeySecret" is set more than once (also in sharedOptions)`,
		},
	}, {
		name: "only one OSS key from a secret",
		mutate: func(d *fluid.Dataset) {
			d.Spec.Mounts[0].EncryptOptions = d.Spec.Mounts[0].EncryptOptions[:1]
		},
		want: []string{"Error spec.mounts[0].encryptOptions: fs.oss.accessKeyId and fs.oss.accessKeySecret must be set together"},
	}, {
		name: "OSS keys split between shared and mount encryptOptions",
		mutate: func(d *fluid.Dataset) {
			d.Spec.SharedEncryptOptions = d.Spec.Mounts[0].EncryptOptions[:1]
			d.Spec.Mounts[0].EncryptOptions = d.Spec.Mounts[0].EncryptOptions[1:]
		},
	}, {
		name:   "encrypt option without key",
		mutate: func(d *fluid.Dataset) { d.Spec.Mounts[0].EncryptOptions[0].ValueFrom.SecretKeyRef.Key = "" },
		want:   []string{"Error spec.mounts[0].encryptOptions[0].valueFrom.secretKeyRef.key: missing field(s)"},
	}, {
		name: "encrypt option without name and secret",
		mutate: func(d *fluid.Dataset) {
			d.Spec.SharedEncryptOptions = []fluid.EncryptOption{{}}
		},
		want: []string{
			"Error spec.sharedEncryptOptions[0].name: missing field(s)",
			"Error spec.sharedEncryptOptions[0].valueFrom.secretKeyRef.key: missing field(s)",
			"Error spec.sharedEncryptOptions[0].valueFrom.secretKeyRef.name: missing field(s)",
		},
	}, {
		name: "encrypt option twice",
		mutate: func(d *fluid.Dataset) {
			m := &d.Spec.Mounts[0]
			m.EncryptOptions = append(m.EncryptOptions, secretOpt("fs.oss.accessKeyId"))
		},
		want: []string{`Error spec.mounts[0].encryptOptions[2].name: option "fs.oss.accessKeyId" is set more than once (also in encryptOptions[0])`},
	}, {
		name: "encrypt option three times",
		mutate: func(d *fluid.Dataset) {
			m := &d.Spec.Mounts[0]
			m.EncryptOptions = append(m.EncryptOptions, secretOpt("fs.oss.accessKeyId"), secretOpt("fs.oss.accessKeyId"))
		},
		want: []string{
			`Error spec.mounts[0].encryptOptions[2].name: option "fs.oss.accessKeyId" is set more than once (also in encryptOptions[0])`,
			`Error spec.mounts[0].encryptOptions[3].name: option "fs.oss.accessKeyId" is set more than once (also in encryptOptions[0])`,
		},
	}, {
		name: "encrypt option also in options",
		mutate: func(d *fluid.Dataset) {
			m := &d.Spec.Mounts[0]
			m.EncryptOptions = append(m.EncryptOptions, secretOpt("fs.oss.endpoint"))
		},
		want: []string{`Error spec.mounts[0].encryptOptions[2].name: option "fs.oss.endpoint" is set more than once (also in options)`},
	}, {
		name: "encrypt option also in sharedEncryptOptions",
		mutate: func(d *fluid.Dataset) {
			d.Spec.SharedEncryptOptions = []fluid.EncryptOption{secretOpt("fs.oss.accessKeyId")}
		},
		want: []string{`Error spec.mounts[0].encryptOptions[0].name: option "fs.oss.accessKeyId" is set more than once (also in sharedEncryptOptions)`},
	}, {
		name: "sharedEncryptOptions twice and in sharedOptions",
		mutate: func(d *fluid.Dataset) {
			d.Spec.SharedOptions = map[string]string{"fs.oss.region": "cn-beijing"}
			d.Spec.SharedEncryptOptions = []fluid.EncryptOption{secretOpt("token.x"), secretOpt("token.x"), secretOpt("fs.oss.region")}
		},
		want: []string{
			`Error spec.sharedEncryptOptions[1].name: option "token.x" is set more than once (also in sharedEncryptOptions[0])`,
			`Error spec.sharedEncryptOptions[2].name: option "fs.oss.region" is set more than once (also in sharedOptions)`,
		},
	}, {
		name: "mount option also in sharedEncryptOptions",
		mutate: func(d *fluid.Dataset) {
			d.Spec.SharedEncryptOptions = []fluid.EncryptOption{secretOpt("fs.oss.endpoint")}
		},
		want: []string{`Error spec.mounts[0].options[fs.oss.endpoint]: option "fs.oss.endpoint" is set more than once (also in sharedEncryptOptions)`},
	}, {
		name: "duplicate mount names",
		mutate: func(d *fluid.Dataset) {
			d.Spec.Mounts = append(d.Spec.Mounts, d.Spec.Mounts[0])
			d.Spec.Mounts[1].Path = "/other"
		},
		want: []string{`Error spec.mounts[1].name: duplicate mount name "sd" (also mounts[0])`},
	}, {
		name: "duplicate mount paths",
		mutate: func(d *fluid.Dataset) {
			d.Spec.Mounts = append(d.Spec.Mounts, d.Spec.Mounts[0])
			d.Spec.Mounts[1].Name = "other"
			d.Spec.Mounts[0].Path = "/other"
		},
		want: []string{`Error spec.mounts[1].path: duplicate mount path "/other" (also mounts[0])`},
	}, {
		name:   "relative mount path is ignored by Fluid",
		mutate: func(d *fluid.Dataset) { d.Spec.Mounts[0].Path = "models/sd" },
		want:   []string{`Warning spec.mounts[0].path: relative path "models/sd" is ignored by Fluid: the mount appears at /sd`},
	}, {
		name: "invalid access mode",
		mutate: func(d *fluid.Dataset) {
			d.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{"ReadOnlyMany", "ReadOnly"}
		},
		want: []string{`Error spec.accessModes[1]: invalid value "ReadOnly": expected one of ReadWriteOnce, ReadOnlyMany, ReadWriteMany, ReadWriteOncePod`},
	}, {
		name:   "invalid placement",
		mutate: func(d *fluid.Dataset) { d.Spec.PlacementMode = "shared" },
		want:   []string{`Error spec.placement: invalid value "shared": expected one of Exclusive, Shared`},
	}, {
		name:   "owner without user and group",
		mutate: func(d *fluid.Dataset) { d.Spec.Owner = &fluid.User{UID: ptr(int64(1000)), GID: ptr(int64(1000))} },
		want:   []string{"Error spec.owner.group: missing field(s)", "Error spec.owner.user: missing field(s)"},
	}, {
		name:   "restore location not local or pvc",
		mutate: func(d *fluid.Dataset) { d.Spec.DataRestoreLocation = &fluid.DataRestoreLocation{Path: "/backup"} },
		want: []string{`Error spec.dataRestoreLocation.path: invalid restore path "/backup": ` +
			"expected local://<subpath> or pvc://<claim>/<subpath>"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := validDataset()
			tt.mutate(d)
			checkDiags(t, d.Validate(), tt.want)
		})
	}
}

func TestDatasetMountPoints(t *testing.T) {
	for _, mp := range []string{
		"/mnt/nas/models", "s3://bucket/models/", "s3a://bucket", "cos://bucket/p", "obs://bucket/p", "gs://bucket/p",
		"hdfs://namenode:9000/models", "juicefs:///", "nfs://nas-address:/sub/path", "local:///mnt/models",
		"pvc://nas-models/sd", "pvc://nas-models", "http://mirror.example.com/models/", "https://mirror.example.com/",
		"wasb://container@account.blob.core.windows.net/p", "abfs://container@account.dfs.core.windows.net/p",
	} {
		t.Run(mp, func(t *testing.T) {
			d := validDataset()
			d.Spec.Mounts[0] = fluid.Mount{MountPoint: mp, Name: "m"}
			checkDiags(t, d.Validate(), nil)
		})
	}
	d := validDataset()
	d.Spec.Mounts[0] = fluid.Mount{MountPoint: "dataset://default/phy", Name: "ref"}
	checkDiags(t, d.Validate(), nil)
}

func TestDatasetSetDefaults(t *testing.T) {
	d := validDataset()
	d.Spec.AccessModes = nil
	d.SetDefaults()
	if !slices.Equal(d.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany}) {
		t.Errorf("accessModes = %v, want [ReadOnlyMany]", d.Spec.AccessModes)
	}
	if d.Spec.PlacementMode != fluid.ExclusiveMode {
		t.Errorf("placement = %q, want Exclusive", d.Spec.PlacementMode)
	}

	d = validDataset()
	d.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}
	d.Spec.PlacementMode = fluid.ShareMode
	d.SetDefaults()
	if !slices.Equal(d.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}) || d.Spec.PlacementMode != fluid.ShareMode {
		t.Errorf("SetDefaults overwrote set fields: %v %q", d.Spec.AccessModes, d.Spec.PlacementMode)
	}
}

func TestDatasetSecretRefs(t *testing.T) {
	d := validDataset()
	d.Spec.Mounts = append(d.Spec.Mounts, fluid.Mount{MountPoint: "s3://b/p", Name: "s3", EncryptOptions: []fluid.EncryptOption{{
		Name: "aws.secretKey", ValueFrom: fluid.EncryptOptionSource{SecretKeyRef: fluid.SecretKeySelector{Name: "aws", Key: "secret"}},
	}}})
	d.Spec.SharedEncryptOptions = []fluid.EncryptOption{secretOpt("token")}
	want := []fluid.SecretRef{
		{Path: "spec.mounts[0].encryptOptions[0].valueFrom.secretKeyRef", Name: "access-key", Key: "fs.oss.accessKeyId"},
		{Path: "spec.mounts[0].encryptOptions[1].valueFrom.secretKeyRef", Name: "access-key", Key: "fs.oss.accessKeySecret"},
		{Path: "spec.mounts[1].encryptOptions[0].valueFrom.secretKeyRef", Name: "aws", Key: "secret"},
		{Path: "spec.sharedEncryptOptions[0].valueFrom.secretKeyRef", Name: "access-key", Key: "token"},
	}
	if got := d.SecretRefs(); !slices.Equal(got, want) {
		t.Errorf("SecretRefs:\n got  %+v\n want %+v", got, want)
	}
	if got := (&fluid.Dataset{}).SecretRefs(); len(got) != 0 {
		t.Errorf("SecretRefs of an empty dataset = %+v", got)
	}
}

func TestMountUFSPath(t *testing.T) {
	for _, tt := range []struct {
		mount fluid.Mount
		want  string
	}{
		{fluid.Mount{Name: "sd", Path: "/models/sd"}, "/models/sd"},
		{fluid.Mount{Name: "sd", Path: "models/sd"}, "/sd"},
		{fluid.Mount{Name: "sd"}, "/sd"},
		{fluid.Mount{}, "/"},
	} {
		if got := tt.mount.UFSPath(); got != tt.want {
			t.Errorf("%+v.UFSPath() = %q, want %q", tt.mount, got, tt.want)
		}
	}
}

func TestDatasetMountOptions(t *testing.T) {
	s := fluid.DatasetSpec{
		SharedOptions:        map[string]string{"a": "shared", "b": "shared"},
		SharedEncryptOptions: []fluid.EncryptOption{secretOpt("s")},
	}
	m := fluid.Mount{Options: map[string]string{"b": "mount"}, EncryptOptions: []fluid.EncryptOption{secretOpt("m")}}
	if got := s.MountOptions(&m); len(got) != 2 || got["a"] != "shared" || got["b"] != "mount" {
		t.Errorf("MountOptions = %v", got)
	}
	got := s.MountEncryptOptions(&m)
	if len(got) != 2 || got[0].Name != "s" || got[1].Name != "m" {
		t.Errorf("MountEncryptOptions = %+v", got)
	}
}
