package fluid

import (
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"knative.dev/pkg/apis"

	"github.com/infera-dev/infera/internal/kvalidate"
)

// MediumType is the medium of a cache tier.
type MediumType string

// The media Fluid knows, fastest first.
const (
	MediumMemory MediumType = "MEM"
	MediumSSD    MediumType = "SSD"
	MediumHDD    MediumType = "HDD"
)

// VolumeType is how a cache tier's directories reach the worker.
type VolumeType string

// The volume types the CRD allows; hostPath is its default.
const (
	VolumeTypeHostPath VolumeType = "hostPath"
	VolumeTypeEmptyDir VolumeType = "emptyDir"
)

// TieredStore is the cache storage of a runtime, one Level per tier.
type TieredStore struct {
	Levels []Level `json:"levels,omitempty"`
}

// Level is one cache tier.
type Level struct {
	// MediumType is MEM, SSD or HDD.
	MediumType MediumType `json:"mediumtype"`
	// VolumeType is hostPath (the default) or emptyDir.
	VolumeType VolumeType `json:"volumeType,omitempty"`
	// VolumeSource shapes an emptyDir tier (medium, sizeLimit).
	VolumeSource *corev1.VolumeSource `json:"volumeSource,omitempty"`
	// Path is one absolute directory, or several separated by commas.
	Path string `json:"path,omitempty"`
	// Quota is the tier's size, split evenly over its paths.
	Quota *resource.Quantity `json:"quota,omitempty"`
	// QuotaList gives one comma-separated quota per path and overrides Quota.
	QuotaList string `json:"quotaList,omitempty"`
	// High is the usage ratio ("0.95") at which eviction starts.
	High string `json:"high,omitempty"`
	// Low is the usage ratio ("0.7") eviction brings the tier down to.
	Low string `json:"low,omitempty"`
}

// Paths splits Path on commas, as Fluid does.
func (l *Level) Paths() []string {
	return strings.Split(l.Path, ",")
}

// User is the identity a runtime's processes run as, or a Dataset's owner.
type User struct {
	UID       *int64 `json:"uid"`
	GID       *int64 `json:"gid"`
	UserName  string `json:"user"`
	GroupName string `json:"group"`
}

// PodMetadata is propagated to the pods of a runtime component.
type PodMetadata struct {
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// VersionSpec picks the image of a runtime.
type VersionSpec struct {
	Image           string `json:"image,omitempty"`
	ImageTag        string `json:"imageTag,omitempty"`
	ImagePullPolicy string `json:"imagePullPolicy,omitempty"`
}

// InitUsersSpec configures the init container that creates users.
type InitUsersSpec struct {
	Image           string                      `json:"image,omitempty"`
	ImageTag        string                      `json:"imageTag,omitempty"`
	ImagePullPolicy string                      `json:"imagePullPolicy,omitempty"`
	Env             map[string]string           `json:"env,omitempty"`
	Resources       corev1.ResourceRequirements `json:"resources,omitempty"`
}

// CleanCachePolicy says how long cache cleaning may take on shutdown.
type CleanCachePolicy struct {
	GracePeriodSeconds *int32 `json:"gracePeriodSeconds,omitempty"`
	MaxRetryAttempts   *int32 `json:"maxRetryAttempts,omitempty"`
}

// MetadataSyncPolicy says whether metadata is synced when a runtime starts.
type MetadataSyncPolicy struct {
	AutoSync *bool `json:"autoSync,omitempty"`
}

// RuntimeManagement holds a runtime's management policies.
type RuntimeManagement struct {
	CleanCachePolicy   CleanCachePolicy   `json:"cleanCachePolicy,omitempty"`
	MetadataSyncPolicy MetadataSyncPolicy `json:"metadataSyncPolicy,omitempty"`
}

// ClientMetrics says whether fuse metrics are exposed.
type ClientMetrics struct {
	Enabled      bool   `json:"enabled,omitempty"`
	ScrapeTarget string `json:"scrapeTarget,omitempty"`
}

// FuseCleanPolicy says when fuse pods are cleaned up.
type FuseCleanPolicy string

// Fuse clean policies. OnRuntimeDeleted is the default; OnFuseChanged exists
// for JuiceFS only.
const (
	CleanPolicyOnDemand         FuseCleanPolicy = "OnDemand"
	CleanPolicyOnRuntimeDeleted FuseCleanPolicy = "OnRuntimeDeleted"
	CleanPolicyOnFuseChanged    FuseCleanPolicy = "OnFuseChanged"
)

// NetworkMode is HostNetwork (the default, written "") or ContainerNetwork.
type NetworkMode string

// Network modes.
const (
	HostNetwork      NetworkMode = "HostNetwork"
	ContainerNetwork NetworkMode = "ContainerNetwork"
)

func validateNetworkMode(m NetworkMode, path string) *apis.FieldError {
	return kvalidate.Enum(m, path, HostNetwork, ContainerNetwork)
}

func defaultCleanPolicy(p *FuseCleanPolicy) {
	if *p == "" {
		*p = CleanPolicyOnRuntimeDeleted
	}
}

func (t *TieredStore) setDefaults() {
	for i := range t.Levels {
		if t.Levels[i].VolumeType == "" {
			t.Levels[i].VolumeType = VolumeTypeHostPath
		}
	}
}

// validate checks the tiers; paths are relative to the tieredstore field.
func (t *TieredStore) validate() *apis.FieldError {
	var errs *apis.FieldError
	seen := map[MediumType]int{}
	for i := range t.Levels {
		l := &t.Levels[i]
		errs = errs.Also(l.validate().ViaFieldIndex("levels", i))
		if l.MediumType == "" {
			continue
		}
		if j, dup := seen[l.MediumType]; dup {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("duplicate medium type %q (also levels[%d])", l.MediumType, j),
				"mediumtype").ViaFieldIndex("levels", i))
		} else {
			seen[l.MediumType] = i
		}
	}
	return errs
}

func (l *Level) validate() *apis.FieldError {
	var errs *apis.FieldError
	if l.MediumType == "" {
		errs = errs.Also(apis.ErrMissingField("mediumtype"))
	}
	errs = errs.Also(kvalidate.Enum(l.MediumType, "mediumtype", MediumMemory, MediumSSD, MediumHDD))
	errs = errs.Also(kvalidate.Enum(l.VolumeType, "volumeType", VolumeTypeHostPath, VolumeTypeEmptyDir))
	if l.VolumeSource != nil && l.VolumeType != VolumeTypeEmptyDir {
		errs = errs.Also(apis.ErrGeneric("used only when volumeType is emptyDir", "volumeSource").At(apis.WarningLevel))
	}

	paths := 0
	if l.Path == "" {
		errs = errs.Also(apis.ErrMissingField("path"))
	} else {
		for _, p := range l.Paths() {
			paths++
			if !strings.HasPrefix(p, "/") {
				errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("cache path %q must be absolute", p), "path"))
			}
		}
	}

	switch {
	case l.Quota == nil && l.QuotaList == "":
		errs = errs.Also(apis.ErrGeneric("quota or quotaList is required", "quota"))
	case l.QuotaList != "":
		if l.Quota != nil {
			errs = errs.Also(apis.ErrGeneric("ignored: quotaList overrides quota", "quota").At(apis.WarningLevel))
		}
		quotas := strings.Split(l.QuotaList, ",")
		for _, q := range quotas {
			qty, err := resource.ParseQuantity(q)
			if err != nil {
				errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("invalid quantity %q", q), "quotaList"))
			} else if qty.Sign() <= 0 {
				errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("quota %q must be greater than 0", q), "quotaList"))
			}
		}
		if paths > 0 && len(quotas) != paths {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("has %d quotas for %d paths: give one quota per path", len(quotas), paths), "quotaList"))
		}
	default:
		if l.Quota.Sign() <= 0 {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("must be greater than 0, got %s", l.Quota), "quota"))
		}
	}

	high, highOK := parseRatio(l.High)
	if l.High != "" && (!highOK || high <= 0) {
		errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("must be a ratio with 0 < high <= 1, got %q", l.High), "high"))
		highOK = false
	}
	low, lowOK := parseRatio(l.Low)
	if l.Low != "" && (!lowOK || low >= 1) {
		errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("must be a ratio with 0 <= low < 1, got %q", l.Low), "low"))
		lowOK = false
	}
	if highOK && lowOK && low >= high {
		errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("must be less than high (%q), got %q", l.High, l.Low), "low"))
	}
	return errs
}

// parseRatio parses a watermark such as "0.95"; ok is false when s is empty,
// not a number, or outside [0, 1].
func parseRatio(s string) (float64, bool) {
	if s == "" {
		return 0, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || !(f >= 0 && f <= 1) {
		return 0, false
	}
	return f, true
}
