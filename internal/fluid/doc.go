// Package fluid holds the data.fluid.io/v1alpha1 kinds infera reads: Dataset,
// the cache runtimes JindoRuntime, AlluxioRuntime and JuiceFSRuntime, and
// DataLoad.
//
// The structs mirror Fluid's api/v1alpha1 types field for field and use the
// same JSON names, so a manifest written for a Fluid cluster decodes here
// unchanged, and a strict decoder can report any field Fluid would not know.
// Status is left out: infera owns status, manifests do not carry it.
//
// Every kind has SetDefaults and Validate (see [Object]). SetDefaults applies
// only the defaults Fluid itself applies: the CRD defaults (DataLoad policy
// Once, tiered store volumeType hostPath) and the ones its controllers fill
// in (Dataset accessModes ReadOnlyMany, placement Exclusive, fuse cleanPolicy
// OnRuntimeDeleted).
//
// Validate returns every problem at once as a *apis.FieldError whose paths
// start at the object root ("spec.mounts[0].mountPoint",
// "spec.tieredstore.levels[0].low", "spec.mounts[0].options[fs.oss.endpoint]").
// It enforces what Fluid enforces, wherever Fluid enforces it (the CRD
// schema, the dataset and runtime controllers, the engines' transforms: a
// DNS-1035 name, a bucket in oss:// mount points, fs.oss.endpoint for OSS,
// both a secret name and key in encryptOptions, quota or quotaList per tier,
// one quota per cache path, an option set only once), and a few rules of
// infera's own that Fluid leaves to luck: credentials never in plain options,
// watermarks that make sense (0 <= low < high <= 1), absolute paths. Things
// Fluid silently ignores, such as a relative mount path or a second tier on
// a JindoRuntime, are reported at apis.WarningLevel.
//
// The package is pure: no I/O, no clock, no global state.
package fluid
