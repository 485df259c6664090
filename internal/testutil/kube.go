package testutil

import (
	"bytes"
	"os"
	"slices"
	"testing"

	"knative.dev/pkg/apis"
	"sigs.k8s.io/yaml"

	"github.com/infera-dev/infera/internal/kvalidate"
)

// CheckFieldErrors compares the whole outcome of a validation, as kvalidate.Lines renders it,
// with want (in any order).
func CheckFieldErrors(tb testing.TB, err *apis.FieldError, want []string) {
	tb.Helper()
	got := kvalidate.Lines(err)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		tb.Errorf("diagnostics:\n got  %q\n want %q", got, want)
	}
}

// DecodeFile strictly decodes every document of a multi-document YAML file into the object
// newObject makes for its apiVersion and kind (an error stops the test).
func DecodeFile[T any](tb testing.TB, path string, newObject func(apiVersion, kind string) (T, error)) []T {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var objs []T
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			tb.Fatalf("%s: %v", path, err)
		}
		obj, err := newObject(head.APIVersion, head.Kind)
		if err != nil {
			tb.Fatalf("%s: %v", path, err)
		}
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			tb.Fatalf("%s: %s: %v", path, head.Kind, err)
		}
		objs = append(objs, obj)
	}
	return objs
}
