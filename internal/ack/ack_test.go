package ack_test

import (
	"reflect"
	"testing"
	"time"

	"knative.dev/pkg/apis"

	"github.com/infera-dev/infera/internal/ack"
)

func TestNew(t *testing.T) {
	want := map[string]struct {
		obj        any
		apiVersion string
	}{
		ack.KindImageCache:     {&ack.ImageCache{}, "eci.alibabacloud.com/v1"},
		ack.KindResourcePolicy: {&ack.ResourcePolicy{}, "scheduling.alibabacloud.com/v1alpha1"},
	}
	if len(ack.Kinds()) != len(want) {
		t.Errorf("Kinds() = %v", ack.Kinds())
	}
	for _, kind := range ack.Kinds() {
		obj, ok := ack.New(kind)
		if !ok || !reflect.DeepEqual(obj, want[kind].obj) {
			t.Errorf("New(%q) = %#v, %v; want a zero %T", kind, obj, ok, want[kind].obj)
		}
		if v, ok := ack.APIVersionOf(kind); !ok || v != want[kind].apiVersion {
			t.Errorf("APIVersionOf(%q) = %q, %v", kind, v, ok)
		}
	}
	for _, kind := range []string{"", "imagecache", "Dataset"} {
		if obj, ok := ack.New(kind); ok || obj != nil {
			t.Errorf("New(%q) = %v, %v; want nil, false", kind, obj, ok)
		}
		if v, ok := ack.APIVersionOf(kind); ok || v != "" {
			t.Errorf("APIVersionOf(%q) = %q, %v", kind, v, ok)
		}
	}
}

// TestArticle decodes the article's ImageCache (with an image) and
// ResourcePolicy strictly, defaults and validates them: no errors; the
// ImageCache carries a pod annotation, which is worth a warning.
func TestArticle(t *testing.T) {
	objs := decodeFile(t, "testdata/article.yaml")
	if len(objs) != 2 {
		t.Fatalf("decoded %d objects, want 2", len(objs))
	}
	ic, ok := objs[0].(*ack.ImageCache)
	if !ok {
		t.Fatalf("first object is %T", objs[0])
	}
	rp, ok := objs[1].(*ack.ResourcePolicy)
	if !ok {
		t.Fatalf("second object is %T", objs[1])
	}
	for _, obj := range objs {
		obj.SetDefaults()
	}
	checkDiags(t, ic.Validate(), []string{annotationWarning})
	if err := ic.Validate().Filter(apis.ErrorLevel); err != nil {
		t.Errorf("article ImageCache has errors: %v", err)
	}
	checkDiags(t, rp.Validate(), nil)

	if *ic.Spec.ImageCacheSize != 25 || *ic.Spec.RetentionDays != 7 || len(ic.Spec.Images) != 1 {
		t.Errorf("ImageCache spec = %+v", ic.Spec)
	}
	units := rp.Spec.Units
	if rp.Spec.Selector["serving.knative.dev/service"] != "helloworld-go" || len(units) != 3 ||
		units[0].Resource != ack.ResourceECS || units[0].Max == nil || *units[0].Max != 10 || units[0].NodeSelector["key2"] != "value2" ||
		units[1].Max != nil || units[2].Resource != ack.ResourceECI {
		t.Errorf("ResourcePolicy spec = %+v", rp.Spec)
	}
}

// TestArticleImageCacheAsPublished: the article's ImageCache has an empty
// entry in images, which must be reported precisely.
func TestArticleImageCacheAsPublished(t *testing.T) {
	objs := decodeFile(t, "testdata/article-imagecache-original.yaml")
	ic := objs[0].(*ack.ImageCache)
	ic.SetDefaults()
	err := ic.Validate()
	checkDiags(t, err, []string{"Error spec.images[0]: image must not be empty", annotationWarning})
	if got := err.Filter(apis.ErrorLevel).Error(); got != "image must not be empty: spec.images[0]" {
		t.Errorf("Error() = %q", got)
	}
}

func TestAlibabaSamples(t *testing.T) {
	objs := decodeFile(t, "testdata/alibaba-samples.yaml")
	for _, obj := range objs {
		obj.SetDefaults()
		checkDiags(t, obj.Validate(), nil)
	}
	rp := objs[1].(*ack.ResourcePolicy)
	if w := rp.Spec.WhenTryNextUnits; w.Policy != ack.TimeoutOrExceedMax || w.Timeout.Duration != time.Minute {
		t.Errorf("whenTryNextUnits = %+v", w)
	}
	if u := rp.Spec.Units[0]; u.PodLabels["key1"] != "value1" || u.PodAnnotations["key1"] != "value1" {
		t.Errorf("units[0] = %+v", u)
	}
}
