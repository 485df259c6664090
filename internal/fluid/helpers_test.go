package fluid_test

import (
	"fmt"
	"testing"

	"knative.dev/pkg/apis"

	"github.com/infera-dev/infera/internal/fluid"
	"github.com/infera-dev/infera/internal/testutil"
)

func checkDiags(t *testing.T, err *apis.FieldError, want []string) {
	t.Helper()
	testutil.CheckFieldErrors(t, err, want)
}

// decodeFile strictly decodes every document of a multi-document YAML file
// into the kind it names.
func decodeFile(t *testing.T, path string) []fluid.Object {
	t.Helper()
	return testutil.DecodeFile(t, path, func(apiVersion, kind string) (fluid.Object, error) {
		if apiVersion != fluid.APIVersion {
			return nil, fmt.Errorf("apiVersion %q", apiVersion)
		}
		obj, ok := fluid.New(kind)
		if !ok {
			return nil, fmt.Errorf("unknown kind %q", kind)
		}
		return obj, nil
	})
}

func ptr[T any](v T) *T { return &v }
