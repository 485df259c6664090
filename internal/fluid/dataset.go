package fluid

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"knative.dev/pkg/apis"

	"github.com/infera-dev/infera/internal/kvalidate"
)

// Dataset describes where data lives; Fluid creates a claim of the same name
// that pods mount once a runtime of the same name caches it.
type Dataset struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec DatasetSpec `json:"spec"`
}

// DatasetSpec is the desired state of a Dataset.
type DatasetSpec struct {
	// Mounts are the storage locations merged into the dataset.
	Mounts []Mount `json:"mounts,omitempty"`
	// Owner is the user owning the data.
	Owner *User `json:"owner,omitempty"`
	// NodeAffinity limits the nodes that may cache the data.
	NodeAffinity *CacheableNodeAffinity `json:"nodeAffinity,omitempty"`
	// Tolerations are given to the cache pods.
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`
	// AccessModes of the claim; Fluid uses ReadOnlyMany when empty.
	AccessModes []corev1.PersistentVolumeAccessMode `json:"accessModes,omitempty"`
	// Runtimes is normally written by Fluid, not by users.
	Runtimes []Runtime `json:"runtimes,omitempty"`
	// PlacementMode is Exclusive (the default, also written "") or Shared.
	PlacementMode PlacementMode `json:"placement,omitempty"`
	// DataRestoreLocation is a backup to load metadata from.
	DataRestoreLocation *DataRestoreLocation `json:"dataRestoreLocation,omitempty"`
	// SharedOptions apply to every mount; a mount's own options win.
	SharedOptions map[string]string `json:"sharedOptions,omitempty"`
	// SharedEncryptOptions apply to every mount.
	SharedEncryptOptions []EncryptOption `json:"sharedEncryptOptions,omitempty"`
}

// Mount is one storage location.
type Mount struct {
	// MountPoint is the source: oss://bucket/path, s3://..., pvc://claim/sub,
	// local:///dir, https://..., an absolute path, ...
	MountPoint string `json:"mountPoint"`
	// Options configure access (fs.oss.endpoint, ...); never credentials.
	Options map[string]string `json:"options,omitempty"`
	// Name names the mount; it is also its path when Path is not absolute.
	Name string `json:"name,omitempty"`
	// Path is where the mount appears in the dataset, if absolute.
	Path string `json:"path,omitempty"`
	// ReadOnly mounts the source read-only.
	ReadOnly bool `json:"readOnly,omitempty"`
	// Shared marks the mount as shared.
	Shared bool `json:"shared,omitempty"`
	// EncryptOptions are options read from Secrets: credentials go here.
	EncryptOptions []EncryptOption `json:"encryptOptions,omitempty"`
}

// EncryptOption is an option whose value comes from a Secret.
type EncryptOption struct {
	Name      string              `json:"name"`
	ValueFrom EncryptOptionSource `json:"valueFrom,omitempty"`
}

// EncryptOptionSource says where an EncryptOption's value comes from.
type EncryptOptionSource struct {
	SecretKeyRef SecretKeySelector `json:"secretKeyRef,omitempty"`
}

// SecretKeySelector names a key of a Secret in the Dataset's namespace.
type SecretKeySelector struct {
	Name string `json:"name"`
	Key  string `json:"key,omitempty"`
}

// CacheableNodeAffinity limits the nodes a dataset may be cached on.
type CacheableNodeAffinity struct {
	Required *corev1.NodeSelector `json:"required,omitempty"`
}

// Runtime records a runtime bound to a dataset.
type Runtime struct {
	Name           string `json:"name,omitempty"`
	Namespace      string `json:"namespace,omitempty"`
	Category       string `json:"category,omitempty"`
	Type           string `json:"type,omitempty"`
	MasterReplicas int32  `json:"masterReplicas,omitempty"`
}

// DataRestoreLocation is local://subpath (with NodeName) or pvc://claim/subpath.
type DataRestoreLocation struct {
	Path     string `json:"path,omitempty"`
	NodeName string `json:"nodeName,omitempty"`
}

// PlacementMode says whether datasets may share a node's cache.
type PlacementMode string

// Placement modes; "" means Exclusive.
const (
	ExclusiveMode PlacementMode = "Exclusive"
	ShareMode     PlacementMode = "Shared"
)

// SecretRef is one Secret key a Dataset reads, with the path of the reference.
type SecretRef struct {
	// Path is the field holding the reference, e.g.
	// "spec.mounts[0].encryptOptions[1].valueFrom.secretKeyRef".
	Path string
	Name string
	Key  string
}

// SecretRefs lists the Secret keys the Dataset reads: every mount's
// encryptOptions in order, then sharedEncryptOptions.
func (d *Dataset) SecretRefs() []SecretRef {
	var refs []SecretRef
	add := func(prefix string, opts []EncryptOption) {
		for j, o := range opts {
			refs = append(refs, SecretRef{
				Path: fmt.Sprintf("%s[%d].valueFrom.secretKeyRef", prefix, j),
				Name: o.ValueFrom.SecretKeyRef.Name,
				Key:  o.ValueFrom.SecretKeyRef.Key,
			})
		}
	}
	for i, m := range d.Spec.Mounts {
		add(fmt.Sprintf("spec.mounts[%d].encryptOptions", i), m.EncryptOptions)
	}
	add("spec.sharedEncryptOptions", d.Spec.SharedEncryptOptions)
	return refs
}

// UFSPath is where the mount appears inside the dataset, as Fluid computes
// it: Path when it is absolute, otherwise "/" + Name.
func (m *Mount) UFSPath() string {
	if strings.HasPrefix(m.Path, "/") {
		return m.Path
	}
	return "/" + strings.TrimLeft(m.Name, "/")
}

// MountOptions is the options a mount is accessed with: sharedOptions
// overlaid with the mount's own options, as Fluid merges them.
func (s *DatasetSpec) MountOptions(m *Mount) map[string]string {
	opts := make(map[string]string, len(s.SharedOptions)+len(m.Options))
	for k, v := range s.SharedOptions {
		opts[k] = v
	}
	for k, v := range m.Options {
		opts[k] = v
	}
	return opts
}

// MountEncryptOptions is sharedEncryptOptions followed by the mount's own.
func (s *DatasetSpec) MountEncryptOptions(m *Mount) []EncryptOption {
	opts := make([]EncryptOption, 0, len(s.SharedEncryptOptions)+len(m.EncryptOptions))
	opts = append(opts, s.SharedEncryptOptions...)
	return append(opts, m.EncryptOptions...)
}

// SetDefaults fills in what Fluid assumes when a field is empty: the claim is
// ReadOnlyMany and placement is Exclusive.
func (d *Dataset) SetDefaults() {
	if len(d.Spec.AccessModes) == 0 {
		d.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany}
	}
	if d.Spec.PlacementMode == "" {
		d.Spec.PlacementMode = ExclusiveMode
	}
}

// Validate reports every problem in the Dataset.
func (d *Dataset) Validate() *apis.FieldError {
	return validateName(d.Name).Also(d.Spec.validate().ViaField("spec"))
}

// The schemes a mount point may use: Fluid's own (local, pvc, http(s),
// dataset), those its Jindo, Alluxio and JuiceFS engines handle, and the
// object stores and file systems Alluxio mounts as under storage.
var mountSchemes = []string{
	"oss", "s3", "s3a", "cos", "cosn", "obs", "gs", "wasb", "wasbs", "abfs", "abfss",
	"hdfs", "juicefs", "nfs", "local", "pvc", "http", "https", "dataset",
}

// bucketSchemes need a bucket right after the scheme.
var bucketSchemes = map[string]bool{
	"oss": true, "s3": true, "s3a": true, "cos": true, "cosn": true, "obs": true, "gs": true,
}

// plainCredentials are the options that carry secrets in Fluid's engines and
// docs: OSS, S3, COS and OBS keys (Jindo), the S3 keys Alluxio reads, and
// JuiceFS's metaurl, access-key, secret-key and token (JuiceFS detects its
// community edition from an encrypted metaurl).
var plainCredentials = map[string]bool{
	"fs.oss.accessKeyId": true, "fs.oss.accessKeySecret": true, "fs.oss.securityToken": true,
	"fs.s3.accessKeyId": true, "fs.s3.accessKeySecret": true,
	"fs.cos.accessKeyId": true, "fs.cos.accessKeySecret": true,
	"fs.obs.accessKeyId": true, "fs.obs.accessKeySecret": true,
	"aws.accessKeyId": true, "aws.secretKey": true,
	"access-key": true, "secret-key": true, "token": true, "metaurl": true,
}

const (
	ossEndpoint        = "fs.oss.endpoint"
	ossAccessKeyID     = "fs.oss.accessKeyId"
	ossAccessKeySecret = "fs.oss.accessKeySecret"
)

func (s *DatasetSpec) validate() *apis.FieldError {
	var errs *apis.FieldError
	if len(s.Mounts) == 0 {
		errs = errs.Also(apis.ErrMissingField("mounts"))
	}
	names := map[string]int{}
	paths := map[string]int{}
	for i := range s.Mounts {
		m := &s.Mounts[i]
		errs = errs.Also(s.validateMount(m).ViaFieldIndex("mounts", i))
		if strings.HasPrefix(m.MountPoint, "dataset://") && len(s.Mounts) > 1 {
			errs = errs.Also(apis.ErrGeneric("a dataset:// mount must be the dataset's only mount", "mountPoint").ViaFieldIndex("mounts", i))
		}
		// Fluid's ThinRuntime check, true of every engine: names and the
		// paths they default to must not collide.
		if m.Name != "" {
			if j, dup := names[m.Name]; dup {
				errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("duplicate mount name %q (also mounts[%d])", m.Name, j), "name").ViaFieldIndex("mounts", i))
				continue
			}
			names[m.Name] = i
		}
		p := m.UFSPath()
		if j, dup := paths[p]; dup {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("duplicate mount path %q (also mounts[%d])", p, j), "path").ViaFieldIndex("mounts", i))
			continue
		}
		paths[p] = i
	}

	for i, mode := range s.AccessModes {
		errs = errs.Also(kvalidate.Enum(mode, fmt.Sprintf("accessModes[%d]", i),
			corev1.ReadWriteOnce, corev1.ReadOnlyMany, corev1.ReadWriteMany, corev1.ReadWriteOncePod))
	}
	errs = errs.Also(kvalidate.Enum(s.PlacementMode, "placement", ExclusiveMode, ShareMode))
	if o := s.Owner; o != nil {
		var missing []string
		if o.UID == nil {
			missing = append(missing, "owner.uid")
		}
		if o.GID == nil {
			missing = append(missing, "owner.gid")
		}
		if o.UserName == "" {
			missing = append(missing, "owner.user")
		}
		if o.GroupName == "" {
			missing = append(missing, "owner.group")
		}
		if len(missing) > 0 {
			errs = errs.Also(apis.ErrMissingField(missing...))
		}
	}
	if r := s.DataRestoreLocation; r != nil && r.Path != "" &&
		!strings.HasPrefix(r.Path, "local://") && !strings.HasPrefix(r.Path, "pvc://") {
		errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("invalid restore path %q: expected local://<subpath> or pvc://<claim>/<subpath>", r.Path),
			"dataRestoreLocation.path"))
	}

	errs = errs.Also(plainTextCredentials(s.SharedOptions, "sharedOptions", "sharedEncryptOptions"))
	return errs.Also(checkEncryptOptions(s.SharedEncryptOptions, "sharedEncryptOptions", optionSet{"sharedOptions", has(s.SharedOptions)}))
}

// plainTextCredentials flags credentials written in plain options (field) instead of through
// encryptField and a Secret.
func plainTextCredentials(opts map[string]string, field, encryptField string) *apis.FieldError {
	var errs *apis.FieldError
	for k := range opts {
		if plainCredentials[k] {
			errs = errs.Also(apis.ErrGeneric("credential in plain text: set it with "+encryptField+" and a secretKeyRef", kvalidate.KeyPath(field, k)))
		}
	}
	return errs
}

// optionSet is another place an encrypt option's name may already be set.
type optionSet struct {
	field string
	has   func(name string) bool
}

func has[V any](m map[string]V) func(string) bool {
	return func(name string) bool { _, ok := m[name]; return ok }
}

// checkEncryptOptions validates each of opts (at field) and reports a name set twice in opts or
// also set in one of elsewhere (the first that has it).
func checkEncryptOptions(opts []EncryptOption, field string, elsewhere ...optionSet) *apis.FieldError {
	var errs *apis.FieldError
	seen := map[string]int{}
	for j := range opts {
		o := &opts[j]
		errs = errs.Also(o.validate().ViaFieldIndex(field, j))
		if o.Name == "" {
			continue
		}
		if k, dup := seen[o.Name]; dup {
			errs = errs.Also(setTwice(o.Name, fmt.Sprintf("%s[%d]", field, k)).ViaFieldIndex(field, j))
			continue
		}
		seen[o.Name] = j
		for _, set := range elsewhere {
			if set.has(o.Name) {
				errs = errs.Also(setTwice(o.Name, set.field).ViaFieldIndex(field, j))
				break
			}
		}
	}
	return errs
}

// setTwice is Fluid's "option set more than one times" error, at the name of
// an encrypt option; where says where else the option is set.
func setTwice(name, where string) *apis.FieldError {
	return apis.ErrGeneric(fmt.Sprintf("option %q is set more than once (also in %s)", name, where), "name")
}

// validateMount checks one mount; paths are relative to the mount.
func (s *DatasetSpec) validateMount(m *Mount) *apis.FieldError {
	errs := validateMountPoint(m.MountPoint)

	if m.Path != "" && !strings.HasPrefix(m.Path, "/") {
		errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("relative path %q is ignored by Fluid: the mount appears at %s", m.Path, m.UFSPath()),
			"path").At(apis.WarningLevel))
	}

	errs = errs.Also(plainTextCredentials(m.Options, "options", "encryptOptions"))

	opts := s.MountOptions(m)
	shared := map[string]bool{}
	for _, o := range s.SharedEncryptOptions {
		shared[o.Name] = true
		if _, ok := m.Options[o.Name]; ok && o.Name != "" {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("option %q is set more than once (also in sharedEncryptOptions)", o.Name), kvalidate.KeyPath("options", o.Name)))
		}
	}
	errs = errs.Also(checkEncryptOptions(m.EncryptOptions, "encryptOptions",
		optionSet{"options", has(m.Options)}, optionSet{"sharedOptions", has(s.SharedOptions)},
		optionSet{"sharedEncryptOptions", has(shared)}))

	if strings.HasPrefix(m.MountPoint, "oss://") {
		if opts[ossEndpoint] == "" {
			errs = errs.Also(apis.ErrGeneric("required for oss:// mount points (in options or sharedOptions)", kvalidate.KeyPath("options", ossEndpoint)))
		}
		var id, secret bool
		for _, o := range s.MountEncryptOptions(m) {
			id = id || o.Name == ossAccessKeyID
			secret = secret || o.Name == ossAccessKeySecret
		}
		if id != secret {
			errs = errs.Also(apis.ErrGeneric(ossAccessKeyID+" and "+ossAccessKeySecret+" must be set together", "encryptOptions"))
		}
	}
	return errs
}

func (o *EncryptOption) validate() *apis.FieldError {
	var missing []string
	if o.Name == "" {
		missing = append(missing, "name")
	}
	// The CRD requires only the secret's name, but every engine reads the
	// key too (Jindo refuses "must reference both secret name and key").
	if o.ValueFrom.SecretKeyRef.Name == "" {
		missing = append(missing, "valueFrom.secretKeyRef.name")
	}
	if o.ValueFrom.SecretKeyRef.Key == "" {
		missing = append(missing, "valueFrom.secretKeyRef.key")
	}
	if len(missing) > 0 {
		return apis.ErrMissingField(missing...)
	}
	return nil
}

// validateMountPoint checks the scheme and the part after it; the path of
// every error is "mountPoint".
func validateMountPoint(mp string) *apis.FieldError {
	const field = "mountPoint"
	if mp == "" {
		return apis.ErrMissingField(field)
	}
	if strings.HasPrefix(mp, "/") {
		return nil // a path on the node, e.g. a NAS mount
	}
	scheme, rest, ok := strings.Cut(mp, "://")
	known := false
	for _, s := range mountSchemes {
		known = known || s == scheme
	}
	if !ok || !known {
		return apis.ErrGeneric(fmt.Sprintf("unsupported mount point %q: expected %s:// or an absolute path",
			mp, strings.Join(mountSchemes, "://, ")), field)
	}
	switch {
	case bucketSchemes[scheme]:
		if bucket, _, _ := strings.Cut(rest, "/"); bucket == "" {
			return apis.ErrGeneric(fmt.Sprintf("%s:// mount point must name a bucket: %s://<bucket>/<path>", scheme, scheme), field)
		}
	case scheme == "local":
		if !strings.HasPrefix(rest, "/") {
			return apis.ErrGeneric("local:// mount point must be an absolute path: local:///<path>", field)
		}
	case scheme == "pvc":
		claim, _, _ := strings.Cut(rest, "/")
		if claim == "" {
			return apis.ErrGeneric("pvc:// mount point must name a claim: pvc://<claim>/<subpath>", field)
		}
		if errs := validation.IsDNS1123Subdomain(claim); len(errs) > 0 {
			return apis.ErrGeneric(fmt.Sprintf("invalid claim name %q: %s", claim, strings.Join(errs, "; ")), field)
		}
	case scheme == "dataset":
		parts := strings.SplitN(rest, "/", 3)
		if len(parts) < 2 || parts[0] == "" || parts[1] == "" {
			return apis.ErrGeneric("dataset:// mount point must name a dataset: dataset://<namespace>/<name>", field)
		}
	case scheme == "http" || scheme == "https":
		if host, _, _ := strings.Cut(rest, "/"); host == "" {
			return apis.ErrGeneric(fmt.Sprintf("%s:// mount point must name a host", scheme), field)
		}
	}
	return nil
}
