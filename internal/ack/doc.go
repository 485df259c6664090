// Package ack holds the Alibaba Cloud kinds infera reads next to Knative:
// the ECI ImageCache (eci.alibabacloud.com/v1), which pre-stages the images
// replicas start from, and the ACK scheduler's ResourcePolicy
// (scheduling.alibabacloud.com/v1alpha1), which fills resource units in
// order up to their max and empties them in reverse.
//
// The structs use Alibaba's JSON names, so manifests written for ACK decode
// unchanged and a strict decoder can report any field ACK would not know.
// Each kind has SetDefaults, which applies only the defaults ACK documents
// (ImageCache imageCacheSize 20 GiB; the ResourcePolicy CRD defaults
// ignorePreviousPod false, ignoreTerminatingPod true, preemptPolicy
// AfterAllUnits, whenTryNextUnits.policy LackResourceOrExceedMax and its 15
// minute timeout), and Validate, which returns every problem as a
// *apis.FieldError with paths from the object root
// ("spec.images[0]", "spec.units[1].max"); advice that does not block an
// apply is at apis.WarningLevel.
//
// The package is pure: no I/O, no clock, no global state.
package ack
