package fluid

import (
	"knative.dev/pkg/apis"
)

// validateRuntimeSpec checks what the cache runtimes share: worker replicas
// and the tiered store. Paths are relative to spec.
func validateRuntimeSpec(replicas int32, ts *TieredStore) *apis.FieldError {
	return minErr(int64(replicas), 0, "replicas").Also(ts.validate().ViaField("tieredstore"))
}

// validateComponentReplicas checks a component's replicas, which the CRDs
// bound to a minimum of 1; 0 means unset.
func validateComponentReplicas(replicas int32, path string) *apis.FieldError {
	if replicas == 0 {
		return nil
	}
	return minErr(int64(replicas), 1, path)
}
