package ack_test

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/infera-dev/infera/internal/ack"
)

const annotationWarning = "Warning metadata.annotations[k8s.aliyun.com/eci-image-cache]: no effect on an ImageCache: " +
	"it is a pod annotation (automatic cache matching); cache reuse is k8s.aliyun.com/imc-enable-reuse"

func validImageCache() *ack.ImageCache {
	return &ack.ImageCache{
		ObjectMeta: metav1.ObjectMeta{Name: "imagecache-ai-model"},
		Spec: ack.ImageCacheSpec{
			Images:         []string{"registry-vpc.cn-hangzhou.aliyuncs.com/demo-test/test:helloworld-go"},
			ImageCacheSize: ptr(int32(25)),
			RetentionDays:  ptr(int32(7)),
		},
	}
}

func TestImageCacheValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *ack.ImageCache)
		want   []string
	}{{
		name:   "valid",
		mutate: func(c *ack.ImageCache) {},
	}, {
		name:   "no images",
		mutate: func(c *ack.ImageCache) { c.Spec.Images = nil },
		want:   []string{"Error spec.images: missing field(s)"},
	}, {
		name:   "empty image",
		mutate: func(c *ack.ImageCache) { c.Spec.Images = []string{"busybox:latest", ""} },
		want:   []string{"Error spec.images[1]: image must not be empty"},
	}, {
		name:   "image with a space",
		mutate: func(c *ack.ImageCache) { c.Spec.Images = []string{"busybox: latest"} },
		want:   []string{`Error spec.images[0]: invalid image "busybox: latest": must not contain spaces`},
	}, {
		name: "size at the bounds",
		mutate: func(c *ack.ImageCache) {
			c.Spec.ImageCacheSize = ptr(int32(20))
			c.Spec.RetentionDays = ptr(int32(65536))
		},
	}, {
		name: "size at the upper bound",
		mutate: func(c *ack.ImageCache) {
			c.Spec.ImageCacheSize = ptr(int32(32768))
			c.Spec.RetentionDays = ptr(int32(1))
		},
	}, {
		name:   "size too small",
		mutate: func(c *ack.ImageCache) { c.Spec.ImageCacheSize = ptr(int32(19)) },
		want:   []string{"Error spec.imageCacheSize: expected 20 <= 19 <= 32768"},
	}, {
		name:   "size too large",
		mutate: func(c *ack.ImageCache) { c.Spec.ImageCacheSize = ptr(int32(32769)) },
		want:   []string{"Error spec.imageCacheSize: expected 20 <= 32769 <= 32768"},
	}, {
		name:   "no retention",
		mutate: func(c *ack.ImageCache) { c.Spec.RetentionDays = nil },
	}, {
		name:   "zero retention",
		mutate: func(c *ack.ImageCache) { c.Spec.RetentionDays = ptr(int32(0)) },
		want:   []string{"Error spec.retentionDays: expected 1 <= 0 <= 65536"},
	}, {
		name:   "retention too long",
		mutate: func(c *ack.ImageCache) { c.Spec.RetentionDays = ptr(int32(65537)) },
		want:   []string{"Error spec.retentionDays: expected 1 <= 65537 <= 65536"},
	}, {
		name: "pull secrets",
		mutate: func(c *ack.ImageCache) {
			c.Spec.ImagePullSecrets = []string{"default:regcred", "regcred", ":regcred", "default:", "a:b:c"}
		},
		want: []string{
			`Error spec.imagePullSecrets[1]: invalid secret reference "regcred": expected namespace:secretName`,
			`Error spec.imagePullSecrets[2]: invalid secret reference ":regcred": expected namespace:secretName`,
			`Error spec.imagePullSecrets[3]: invalid secret reference "default:": expected namespace:secretName`,
			`Error spec.imagePullSecrets[4]: invalid secret reference "a:b:c": expected namespace:secretName`,
		},
	}, {
		name:   "namespaced",
		mutate: func(c *ack.ImageCache) { c.Namespace = "default" },
		want:   []string{"Warning metadata.namespace: ignored: ImageCache is cluster-scoped"},
	}, {
		name:   "pod annotation on the cache",
		mutate: func(c *ack.ImageCache) { c.Annotations = map[string]string{"k8s.aliyun.com/eci-image-cache": "true"} },
		want:   []string{annotationWarning},
	}, {
		name:   "reuse annotation",
		mutate: func(c *ack.ImageCache) { c.Annotations = map[string]string{"k8s.aliyun.com/imc-enable-reuse": "true"} },
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validImageCache()
			tt.mutate(c)
			checkDiags(t, c.Validate(), tt.want)
		})
	}
}

func TestImageCacheSetDefaults(t *testing.T) {
	c := validImageCache()
	c.Spec.ImageCacheSize = nil
	c.SetDefaults()
	if c.Spec.ImageCacheSize == nil || *c.Spec.ImageCacheSize != 20 {
		t.Errorf("imageCacheSize = %v, want 20", c.Spec.ImageCacheSize)
	}
	if c.Spec.RetentionDays == nil || *c.Spec.RetentionDays != 7 {
		t.Errorf("retentionDays changed to %v", c.Spec.RetentionDays)
	}
	c.Spec.ImageCacheSize = ptr(int32(40))
	c.SetDefaults()
	if *c.Spec.ImageCacheSize != 40 {
		t.Errorf("SetDefaults overwrote imageCacheSize 40 with %d", *c.Spec.ImageCacheSize)
	}
}

func TestImageCachePullSecrets(t *testing.T) {
	c := validImageCache()
	c.Spec.ImagePullSecrets = []string{"default:secret1", "bad", "kube-system:secret3"}
	want := []ack.PullSecret{
		{Path: "spec.imagePullSecrets[0]", Namespace: "default", Name: "secret1"},
		{Path: "spec.imagePullSecrets[2]", Namespace: "kube-system", Name: "secret3"},
	}
	got := c.PullSecrets()
	if len(got) != len(want) {
		t.Fatalf("PullSecrets = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("PullSecrets[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}
