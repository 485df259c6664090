package ack_test

import (
	"bytes"
	"os"
	"slices"
	"testing"

	"knative.dev/pkg/apis"
	"sigs.k8s.io/yaml"

	"github.com/infera-dev/infera/internal/ack"
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
// into the kind it names, checking its apiVersion.
func decodeFile(t *testing.T, path string) []ack.Object {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var objs []ack.Object
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if v, ok := ack.APIVersionOf(head.Kind); !ok || v != head.APIVersion {
			t.Fatalf("%s: %s %s is not an ack kind", path, head.APIVersion, head.Kind)
		}
		obj, _ := ack.New(head.Kind)
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			t.Fatalf("%s: %s: %v", path, head.Kind, err)
		}
		objs = append(objs, obj)
	}
	return objs
}

func ptr[T any](v T) *T { return &v }
