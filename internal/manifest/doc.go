// Package manifest reads the multi-document YAML infera accepts and turns it into validated
// objects: Knative Services (decoded, defaulted and validated with Knative's own API under the
// config-defaults, config-autoscaler and config-features ConfigMaps beside them), Secrets,
// ConfigMaps, PersistentVolumeClaims, and the Fluid and Alibaba Cloud kinds (internal/fluid,
// internal/ack).
//
// Load decodes a set of Sources strictly, with the file, line and column of every field kept,
// applies defaults, validates every document, checks cross-references (a Service naming a
// Secret, a claim or a Dataset) against the set and what is already applied, and returns every
// problem at once, each as `file:line:col: Kind ns/name: field.path: message`. A set is valid
// only as a whole: callers apply all of it or nothing. DecodeStored reads back what the store
// keeps. The corpora under testdata (bad documents with their expected problems, good ones with
// golden -o yaml output) pin the behaviour.
package manifest
