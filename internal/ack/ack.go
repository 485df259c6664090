package ack

import (
	"fmt"
	"strings"

	"knative.dev/pkg/apis"
)

// The groups and versions of this package's kinds.
const (
	ECIGroup                 = "eci.alibabacloud.com"
	ECIVersion               = "v1"
	ImageCacheAPIVersion     = ECIGroup + "/" + ECIVersion
	SchedulingGroup          = "scheduling.alibabacloud.com"
	SchedulingVersion        = "v1alpha1"
	ResourcePolicyAPIVersion = SchedulingGroup + "/" + SchedulingVersion
)

// Kind names, as written in a manifest's kind field.
const (
	KindImageCache     = "ImageCache"
	KindResourcePolicy = "ResourcePolicy"
)

// Object is what every kind of this package implements.
type Object interface {
	SetDefaults()
	Validate() *apis.FieldError
}

var (
	_ Object = (*ImageCache)(nil)
	_ Object = (*ResourcePolicy)(nil)
)

// Kinds lists the kinds [New] knows, in a stable order.
func Kinds() []string {
	return []string{KindImageCache, KindResourcePolicy}
}

// APIVersionOf returns the apiVersion kind is served at, and false for a
// kind this package does not know. The two kinds live in different groups.
func APIVersionOf(kind string) (string, bool) {
	switch kind {
	case KindImageCache:
		return ImageCacheAPIVersion, true
	case KindResourcePolicy:
		return ResourcePolicyAPIVersion, true
	}
	return "", false
}

// New returns a pointer to a zero value of kind, ready to decode into, and
// false if kind is not one of this package's. Check the apiVersion with
// [APIVersionOf].
func New(kind string) (Object, bool) {
	switch kind {
	case KindImageCache:
		return &ImageCache{}, true
	case KindResourcePolicy:
		return &ResourcePolicy{}, true
	}
	return nil, false
}

// enumErr reports value at path unless it is one of allowed. An empty value
// is accepted: callers check required fields themselves.
func enumErr[T ~string](value T, path string, allowed ...T) *apis.FieldError {
	if value == "" {
		return nil
	}
	for _, a := range allowed {
		if value == a {
			return nil
		}
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	return apis.ErrGeneric(fmt.Sprintf("invalid value %q: expected one of %s", value, strings.Join(names, ", ")), path)
}

// keyPath is the path of key in the map field: "selector[app]". It is built
// by hand because apis.FieldError.ViaKey splits a key on its dots when a
// parent field is prepended.
func keyPath(field, key string) string {
	return field + "[" + key + "]"
}
