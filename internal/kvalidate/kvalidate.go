// Package kvalidate holds the field-validation helpers shared by the Kubernetes kinds infera
// defines itself (Fluid's and Alibaba Cloud's), in knative.dev/pkg/apis's FieldError terms.
package kvalidate

import (
	"fmt"
	"slices"
	"strings"

	"knative.dev/pkg/apis"
)

// Enum reports value at path unless it is one of allowed. An empty value is accepted: callers
// check required fields themselves.
func Enum[T ~string](value T, path string, allowed ...T) *apis.FieldError {
	if value == "" || slices.Contains(allowed, value) {
		return nil
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	return apis.ErrGeneric(fmt.Sprintf("invalid value %q: expected one of %s", value, strings.Join(names, ", ")), path)
}

// KeyPath is the path of key in the map field: "options[fs.oss.endpoint]". It is built by hand
// because apis.FieldError.ViaKey splits a key on its dots when a parent field is prepended.
func KeyPath(field, key string) string {
	return field + "[" + key + "]"
}

// Lines flattens a FieldError into sorted "Level path: message" lines, one per path: the
// complete outcome of a validation, for tests and debugging.
func Lines(err *apis.FieldError) []string {
	var out []string
	for _, e := range err.WrappedErrors() {
		for _, p := range e.Paths {
			out = append(out, fmt.Sprintf("%s %s: %s", e.Level, p, e.Message))
		}
	}
	slices.Sort(out)
	return out
}
