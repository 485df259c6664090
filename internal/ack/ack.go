package ack

import (
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
