package ack

import (
	"fmt"
	"strings"
	"unicode"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/apis"

	"github.com/infera-dev/infera/internal/kvalidate"
)

// ImageCache is an ECI image cache: a disk snapshot holding images, which
// ECI pods start from instead of pulling. It is cluster-scoped.
type ImageCache struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ImageCacheSpec `json:"spec"`
}

// ImageCacheSpec is the desired state of an ImageCache.
type ImageCacheSpec struct {
	// Images are the image references to cache; at least one.
	Images []string `json:"images"`
	// ImagePullSecrets are "namespace:secretName" references for private
	// registries.
	ImagePullSecrets []string `json:"imagePullSecrets,omitempty"`
	// ImageCacheSize is the snapshot disk size in GiB, 20 to 32768; 20 when
	// unset. ECI asks for at least twice the images' size.
	ImageCacheSize *int32 `json:"imageCacheSize,omitempty"`
	// RetentionDays is how long the cache is kept, 1 to 65536 days; unset
	// means it never expires.
	RetentionDays *int32 `json:"retentionDays,omitempty"`
}

// ImageCache size and retention bounds, from the ECI ImageCache API.
const (
	DefaultImageCacheSize = 20
	MinImageCacheSize     = 20
	MaxImageCacheSize     = 32768
	MinRetentionDays      = 1
	MaxRetentionDays      = 65536
)

// Annotations: k8s.aliyun.com/eci-image-cache turns on automatic image cache
// matching for a pod and is sometimes put on the ImageCache by mistake;
// k8s.aliyun.com/imc-enable-reuse is the ImageCache's own reuse switch.
const (
	eciImageCacheAnnotation = "k8s.aliyun.com/eci-image-cache"
	imcEnableReuse          = "k8s.aliyun.com/imc-enable-reuse"
)

// SetDefaults sets imageCacheSize to ECI's default of 20 GiB.
func (c *ImageCache) SetDefaults() {
	if c.Spec.ImageCacheSize == nil {
		size := int32(DefaultImageCacheSize)
		c.Spec.ImageCacheSize = &size
	}
}

// Validate reports every problem in the ImageCache.
func (c *ImageCache) Validate() *apis.FieldError {
	var errs *apis.FieldError
	if c.Namespace != "" {
		errs = errs.Also(apis.ErrGeneric("ignored: ImageCache is cluster-scoped", "metadata.namespace").At(apis.WarningLevel))
	}
	if _, ok := c.Annotations[eciImageCacheAnnotation]; ok {
		errs = errs.Also(apis.ErrGeneric(
			fmt.Sprintf("no effect on an ImageCache: it is a pod annotation (automatic cache matching); cache reuse is %s", imcEnableReuse),
			kvalidate.KeyPath("metadata.annotations", eciImageCacheAnnotation)).At(apis.WarningLevel))
	}
	return errs.Also(c.Spec.validate().ViaField("spec"))
}

func (s *ImageCacheSpec) validate() *apis.FieldError {
	var errs *apis.FieldError
	if len(s.Images) == 0 {
		errs = errs.Also(apis.ErrMissingField("images"))
	}
	for i, image := range s.Images {
		switch {
		case image == "":
			errs = errs.Also(apis.ErrGeneric("image must not be empty", fmt.Sprintf("images[%d]", i)))
		case strings.IndexFunc(image, unicode.IsSpace) >= 0:
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("invalid image %q: must not contain spaces", image), fmt.Sprintf("images[%d]", i)))
		}
	}
	for i, ref := range s.ImagePullSecrets {
		ns, name, ok := strings.Cut(ref, ":")
		if !ok || ns == "" || name == "" || strings.Contains(name, ":") {
			errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("invalid secret reference %q: expected namespace:secretName", ref),
				fmt.Sprintf("imagePullSecrets[%d]", i)))
		}
	}
	if n := s.ImageCacheSize; n != nil && (*n < MinImageCacheSize || *n > MaxImageCacheSize) {
		errs = errs.Also(apis.ErrOutOfBoundsValue(*n, MinImageCacheSize, MaxImageCacheSize, "imageCacheSize"))
	}
	if n := s.RetentionDays; n != nil && (*n < MinRetentionDays || *n > MaxRetentionDays) {
		errs = errs.Also(apis.ErrOutOfBoundsValue(*n, MinRetentionDays, MaxRetentionDays, "retentionDays"))
	}
	return errs
}

// PullSecret is one of spec.imagePullSecrets, split into its parts.
type PullSecret struct {
	// Path is the field holding the reference, e.g. "spec.imagePullSecrets[0]".
	Path      string
	Namespace string
	Name      string
}

// PullSecrets lists the well-formed spec.imagePullSecrets, for checking that
// the Secrets exist.
func (c *ImageCache) PullSecrets() []PullSecret {
	var out []PullSecret
	for i, ref := range c.Spec.ImagePullSecrets {
		if ns, name, ok := strings.Cut(ref, ":"); ok && ns != "" && name != "" {
			out = append(out, PullSecret{Path: fmt.Sprintf("spec.imagePullSecrets[%d]", i), Namespace: ns, Name: name})
		}
	}
	return out
}
