package fluid

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
	"knative.dev/pkg/apis"

	"github.com/infera-dev/infera/internal/kvalidate"
)

// The group and version of every kind in this package.
const (
	Group      = "data.fluid.io"
	Version    = "v1alpha1"
	APIVersion = Group + "/" + Version
)

// Kind names, as written in a manifest's kind field.
const (
	KindDataset        = "Dataset"
	KindJindoRuntime   = "JindoRuntime"
	KindAlluxioRuntime = "AlluxioRuntime"
	KindJuiceFSRuntime = "JuiceFSRuntime"
	KindDataLoad       = "DataLoad"
)

// Object is what every kind of this package implements.
type Object interface {
	SetDefaults()
	Validate() *apis.FieldError
}

var (
	_ Object = (*Dataset)(nil)
	_ Object = (*JindoRuntime)(nil)
	_ Object = (*AlluxioRuntime)(nil)
	_ Object = (*JuiceFSRuntime)(nil)
	_ Object = (*DataLoad)(nil)
)

// Kinds lists the kinds [New] knows, in a stable order.
func Kinds() []string {
	return []string{KindDataset, KindJindoRuntime, KindAlluxioRuntime, KindJuiceFSRuntime, KindDataLoad}
}

// New returns a pointer to a zero value of kind, ready to decode into, and
// false if kind is not one of this package's.
func New(kind string) (Object, bool) {
	switch kind {
	case KindDataset:
		return &Dataset{}, true
	case KindJindoRuntime:
		return &JindoRuntime{}, true
	case KindAlluxioRuntime:
		return &AlluxioRuntime{}, true
	case KindJuiceFSRuntime:
		return &JuiceFSRuntime{}, true
	case KindDataLoad:
		return &DataLoad{}, true
	}
	return nil, false
}

// validateName applies the rule Fluid's dataset and runtime controllers apply
// before anything else: the name must be a DNS-1035 label, because Fluid
// names Services and StatefulSets after it.
func validateName(name string) *apis.FieldError {
	if name == "" {
		return nil // the manifest layer reports a missing name
	}
	if errs := validation.IsDNS1035Label(name); len(errs) > 0 {
		return apis.ErrGeneric(fmt.Sprintf("invalid name %q: %s", name, strings.Join(errs, "; ")), "metadata.name")
	}
	return nil
}

// minErr reports an integer field below its minimum.
func minErr(value, minimum int64, path string) *apis.FieldError {
	if value >= minimum {
		return nil
	}
	return apis.ErrGeneric(fmt.Sprintf("must be >= %d, got %d", minimum, value), path)
}

// validatePullPolicy checks an imagePullPolicy string, which Fluid keeps as a
// plain string but passes to Kubernetes.
func validatePullPolicy(policy, path string) *apis.FieldError {
	return kvalidate.Enum(policy, path, "Always", "IfNotPresent", "Never")
}
