package ack_test

import (
	"fmt"
	"testing"

	"knative.dev/pkg/apis"

	"github.com/infera-dev/infera/internal/ack"
	"github.com/infera-dev/infera/internal/testutil"
)

func checkDiags(t *testing.T, err *apis.FieldError, want []string) {
	t.Helper()
	testutil.CheckFieldErrors(t, err, want)
}

// decodeFile strictly decodes every document of a multi-document YAML file
// into the kind it names, checking its apiVersion.
func decodeFile(t *testing.T, path string) []ack.Object {
	t.Helper()
	return testutil.DecodeFile(t, path, func(apiVersion, kind string) (ack.Object, error) {
		if v, ok := ack.APIVersionOf(kind); !ok || v != apiVersion {
			return nil, fmt.Errorf("%s %s is not an ack kind", apiVersion, kind)
		}
		obj, _ := ack.New(kind)
		return obj, nil
	})
}

func ptr[T any](v T) *T { return &v }
