package fluid_test

import (
	"reflect"
	"testing"

	"k8s.io/apimachinery/pkg/api/resource"
	"knative.dev/pkg/apis"

	"github.com/infera-dev/infera/internal/fluid"
)

func TestNew(t *testing.T) {
	want := map[string]any{
		fluid.KindDataset:        &fluid.Dataset{},
		fluid.KindJindoRuntime:   &fluid.JindoRuntime{},
		fluid.KindAlluxioRuntime: &fluid.AlluxioRuntime{},
		fluid.KindJuiceFSRuntime: &fluid.JuiceFSRuntime{},
		fluid.KindDataLoad:       &fluid.DataLoad{},
	}
	if len(fluid.Kinds()) != len(want) {
		t.Errorf("Kinds() = %v", fluid.Kinds())
	}
	for _, kind := range fluid.Kinds() {
		obj, ok := fluid.New(kind)
		if !ok || !reflect.DeepEqual(obj, want[kind]) {
			t.Errorf("New(%q) = %#v, %v; want a zero %T", kind, obj, ok, want[kind])
		}
	}
	for _, kind := range []string{"", "dataset", "ThinRuntime", "ImageCache"} {
		if obj, ok := fluid.New(kind); ok || obj != nil {
			t.Errorf("New(%q) = %v, %v; want nil, false", kind, obj, ok)
		}
	}
	if fluid.APIVersion != "data.fluid.io/v1alpha1" {
		t.Errorf("APIVersion = %q", fluid.APIVersion)
	}
}

// TestArticle decodes the article's Dataset and JindoRuntime strictly,
// defaults and validates them: no errors, and one warning, because Fluid
// ignores the article's relative mount path.
func TestArticle(t *testing.T) {
	objs := decodeFile(t, "testdata/article.yaml")
	if len(objs) != 2 {
		t.Fatalf("decoded %d objects, want 2", len(objs))
	}
	ds, ok := objs[0].(*fluid.Dataset)
	if !ok {
		t.Fatalf("first object is %T", objs[0])
	}
	rt, ok := objs[1].(*fluid.JindoRuntime)
	if !ok {
		t.Fatalf("second object is %T", objs[1])
	}
	for _, obj := range objs {
		obj.SetDefaults()
	}

	checkDiags(t, ds.Validate(), []string{
		`Warning spec.mounts[0].path: relative path "models/sd" is ignored by Fluid: the mount appears at /xxx`,
	})
	if err := ds.Validate().Filter(apis.ErrorLevel); err != nil {
		t.Errorf("article Dataset has errors: %v", err)
	}
	checkDiags(t, rt.Validate(), nil)

	m := ds.Spec.Mounts[0]
	if m.MountPoint != "oss://my-bucket/models/sd" || ds.Spec.MountOptions(&m)["fs.oss.endpoint"] != "oss-cn-beijing.aliyuncs.com" {
		t.Errorf("mount = %+v", m)
	}
	wantRefs := []fluid.SecretRef{
		{Path: "spec.mounts[0].encryptOptions[0].valueFrom.secretKeyRef", Name: "access-key", Key: "fs.oss.accessKeyId"},
		{Path: "spec.mounts[0].encryptOptions[1].valueFrom.secretKeyRef", Name: "access-key", Key: "fs.oss.accessKeySecret"},
	}
	if got := ds.SecretRefs(); !reflect.DeepEqual(got, wantRefs) {
		t.Errorf("SecretRefs = %+v", got)
	}

	l := rt.Spec.TieredStore.Levels[0]
	if rt.Spec.Replicas != 2 || l.MediumType != fluid.MediumSSD || l.VolumeType != fluid.VolumeTypeEmptyDir ||
		l.Quota.Cmp(resource.MustParse("100Gi")) != 0 || l.High != "0.95" || l.Low != "0.7" ||
		rt.Spec.Fuse.CleanPolicy != fluid.CleanPolicyOnDemand || len(rt.Spec.Fuse.Args) != 5 {
		t.Errorf("runtime = %+v", rt.Spec)
	}
}

// TestFluidSamples decodes manifests taken from Fluid's own documentation,
// which use many more fields than the article, and validates them.
func TestFluidSamples(t *testing.T) {
	for _, obj := range decodeFile(t, "testdata/fluid-samples.yaml") {
		obj.SetDefaults()
		if err := obj.Validate().Filter(apis.ErrorLevel); err != nil {
			t.Errorf("%T: %v", obj, err)
		}
	}
}
