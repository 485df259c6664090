package manifest

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

// kindInfo is what infera knows about one kind: how to make an empty object and how to default
// and validate it. validate runs after defaulting and returns paths rooted at the object.
type kindInfo struct {
	group, version, kind string
	new                  func() any
	validate             func(ctx context.Context, obj any) *apis.FieldError
	clusterScoped        bool // no namespace, like ECI's ImageCache
}

func (k kindInfo) apiVersion() string {
	if k.group == "" {
		return k.version
	}
	return k.group + "/" + k.version
}

// selfValidating is the shape of the kinds infera defines itself (Fluid, ECI, ACK scheduling).
type selfValidating interface {
	SetDefaults()
	Validate() *apis.FieldError
}

func validateSelf(_ context.Context, obj any) *apis.FieldError {
	v := obj.(selfValidating)
	v.SetDefaults()
	fe := v.Validate()
	if m, ok := obj.(metav1.Object); ok && m.GetName() == "" {
		fe = fe.Also(apis.ErrMissingField("metadata.name"))
	}
	return fe
}

// The kinds infera accepts; anything else is an error naming the nearest known kind.
var kinds = append([]kindInfo{
	{"serving.knative.dev", "v1", "Service", func() any { return &servingv1.Service{} }, validateService, false},
	{"", "v1", "Secret", func() any { return &corev1.Secret{} }, validateSecret, false},
	{"", "v1", "ConfigMap", func() any { return &corev1.ConfigMap{} }, validateConfigMap, false},
	{"", "v1", "PersistentVolumeClaim", func() any { return &corev1.PersistentVolumeClaim{} }, validatePVC, false},
}, extKinds()...)

// findKind looks a document's apiVersion and kind up. The error message says what is known.
func findKind(apiVersion, kind string) (kindInfo, string) {
	var sameKind, sameGroup []kindInfo
	group, _, _ := strings.Cut(apiVersion, "/")
	if !strings.Contains(apiVersion, "/") {
		group = ""
	}
	for _, k := range kinds {
		if k.apiVersion() == apiVersion && k.kind == kind {
			return k, ""
		}
		if k.kind == kind {
			sameKind = append(sameKind, k)
		}
		if k.group == group {
			sameGroup = append(sameGroup, k)
		}
	}
	if len(sameKind) > 0 {
		var vs []string
		for _, k := range sameKind {
			vs = append(vs, k.apiVersion())
		}
		return kindInfo{}, fmt.Sprintf("kind %s is not served at apiVersion %q (use %s)", kind, apiVersion, strings.Join(vs, " or "))
	}
	msg := fmt.Sprintf("unknown kind %q (apiVersion %q)", kind, apiVersion)
	names := make([]string, 0, len(kinds))
	for _, k := range kinds {
		names = append(names, k.kind)
	}
	if s := nearest(kind, names); s != "" {
		msg += fmt.Sprintf(": did you mean %q?", s)
	}
	if len(sameGroup) > 0 {
		var ks []string
		for _, k := range sameGroup {
			ks = append(ks, k.kind)
		}
		sort.Strings(ks)
		msg += fmt.Sprintf(" (%s has: %s)", group, strings.Join(ks, ", "))
	}
	return kindInfo{}, msg
}

// KnownKinds lists "apiVersion Kind" for every kind infera accepts, for help texts.
func KnownKinds() []string {
	out := make([]string, len(kinds))
	for i, k := range kinds {
		out[i] = k.apiVersion() + " " + k.kind
	}
	return out
}
