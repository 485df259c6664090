package controller

import (
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/infera-dev/infera/internal/ack"
	"github.com/infera-dev/infera/internal/adminapi"
	"github.com/infera-dev/infera/internal/imagecache"
)

// ImageCaches is what the controller needs of the ImageCache manager
// (internal/imagecache.Manager).
type ImageCaches interface {
	Set(caches []imagecache.Cache)
	Statuses() []imagecache.CacheStatus
}

// syncImageCaches gives the ImageCache manager every ImageCache, its imagePullSecrets
// ("namespace:name") read from the store. A Secret that is missing, or that is not a
// kubernetes.io/dockerconfigjson one, is left out: the pull then goes without it and its
// failure (unauthorized) shows on the image.
func (c *Controller) syncImageCaches() {
	list := c.state.imageCacheList()
	c.mu.Lock()
	c.imageCacheList = list
	c.mu.Unlock()
	if c.images == nil {
		return
	}
	caches := make([]imagecache.Cache, 0, len(c.state.imageCaches))
	for _, name := range slices.Sorted(maps.Keys(c.state.imageCaches)) {
		ic := c.state.imageCaches[name]
		cache := imagecache.Cache{Name: ic.Name, Images: slices.Clone(ic.Spec.Images)}
		if ic.Spec.ImageCacheSize != nil {
			cache.SizeGiB = int(*ic.Spec.ImageCacheSize)
		}
		if ic.Spec.RetentionDays != nil {
			cache.RetentionDays = int(*ic.Spec.RetentionDays)
		}
		for _, ps := range ic.PullSecrets() {
			s := c.state.Secret(ps.Namespace, ps.Name)
			if s == nil {
				c.log.Warn("imagecache pull secret not found", "imagecache", ic.Name, "secret", ps.Namespace+"/"+ps.Name)
				continue
			}
			if v, ok := s.Data[corev1.DockerConfigJsonKey]; ok {
				cache.PullSecrets = append(cache.PullSecrets, v)
			} else if v, ok := s.StringData[corev1.DockerConfigJsonKey]; ok {
				cache.PullSecrets = append(cache.PullSecrets, []byte(v))
			} else {
				c.log.Warn("imagecache pull secret has no .dockerconfigjson", "imagecache", ic.Name, "secret", ps.Namespace+"/"+ps.Name)
			}
		}
		caches = append(caches, cache)
	}
	c.images.Set(caches)
}

// ImageCaches lists the ImageCaches with their images' status. Without a container engine
// each shows Phase Failed and says so.
func (c *Controller) ImageCaches() []adminapi.ImageCacheView {
	var statuses []imagecache.CacheStatus
	if c.images != nil {
		statuses = c.images.Statuses()
	}
	byName := map[string]imagecache.CacheStatus{}
	for _, st := range statuses {
		byName[st.Name] = st
	}
	c.mu.RLock()
	caches := c.imageCacheList
	c.mu.RUnlock()
	out := make([]adminapi.ImageCacheView, 0, len(caches))
	for _, ic := range caches {
		v := adminapi.ImageCacheView{Name: ic.Name}
		if ic.Spec.ImageCacheSize != nil {
			v.Limit = int64(*ic.Spec.ImageCacheSize) << 30
		}
		st, ok := byName[ic.Name]
		switch {
		case c.images == nil:
			v.Phase, v.Message = string(imagecache.PhaseFailed), "no container engine answered when infera started: ImageCaches need one (start dockerd, set DOCKER_HOST)"
		case !ok:
			v.Phase = string(imagecache.PhasePreparing)
		default:
			v.Phase, v.Message, v.Size, v.Owned = string(st.Phase), st.Message, st.Size, st.OwnedSize
			for _, im := range st.Images {
				v.Images = append(v.Images, adminapi.ImageCacheImageView{
					Image: im.Image, State: string(im.State), Reason: im.Reason, ID: im.ID, Digest: im.Digest,
					Size: im.Size, Current: im.Current, Total: im.Total, Owned: im.Owned, PulledAt: im.PulledAt, LastUsed: im.LastUsed,
				})
			}
		}
		if len(v.Images) == 0 {
			for _, image := range ic.Spec.Images {
				v.Images = append(v.Images, adminapi.ImageCacheImageView{Image: image, State: string(imagecache.StatePending)})
			}
		}
		out = append(out, v)
	}
	return out
}

// imageCacheList is the ImageCaches in the store, by name, for the views.
func (s *state) imageCacheList() []*ack.ImageCache {
	out := make([]*ack.ImageCache, 0, len(s.imageCaches))
	for _, name := range slices.Sorted(maps.Keys(s.imageCaches)) {
		out = append(out, s.imageCaches[name])
	}
	return out
}
