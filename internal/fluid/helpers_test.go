package fluid_test

import (
	"bytes"
	"os"
	"slices"
	"testing"

	"knative.dev/pkg/apis"
	"sigs.k8s.io/yaml"

	"github.com/infera-dev/infera/internal/fluid"
	"github.com/infera-dev/infera/internal/kvalidate"
)

func checkDiags(t *testing.T, err *apis.FieldError, want []string) {
	t.Helper()
	got := kvalidate.Lines(err)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("diagnostics:\n got  %q\n want %q", got, want)
	}
}

// decodeFile strictly decodes every document of a multi-document YAML file
// into the kind it names.
func decodeFile(t *testing.T, path string) []fluid.Object {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var objs []fluid.Object
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if head.APIVersion != fluid.APIVersion {
			t.Fatalf("%s: apiVersion %q", path, head.APIVersion)
		}
		obj, ok := fluid.New(head.Kind)
		if !ok {
			t.Fatalf("%s: unknown kind %q", path, head.Kind)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("%s: %s: %v", path, head.Kind, err)
		}
		objs = append(objs, obj)
	}
	return objs
}

func ptr[T any](v T) *T { return &v }
