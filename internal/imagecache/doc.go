// Package imagecache is the mechanism behind ECI's ImageCache (eci.alibabacloud.com/v1) on one
// machine: it pre-pulls the images each ImageCache lists into the container engine, so that a
// replica of such an image starts without a pull, bounds what it pulled by imageCacheSize and
// retentionDays, and reports each cache's status in ECI's words.
//
// ECI makes an image cache a disk snapshot that pods start from. Here the engine's own image
// store is the "disk": an image is cached when the engine holds it. The controller resolves
// each ImageCache into a Cache (its imagePullSecrets read into .dockerconfigjson contents) and
// gives the whole set to Set; Run does the work until its context ends; Touch says a replica
// started from an image; Cached answers whether an image is held Ready; Statuses reports.
//
// # Pulls
//
// Every image a cache lists and has not evicted is looked up in the engine (InspectImage). One
// the engine lacks is pulled, one pull at a time, caches in name order and each cache's images
// in its order (a single pull keeps the registry link and the disk for the image in front;
// pulls of different images do not share layers in flight anyway). Credentials come from
// container.AuthFor over the pull secrets of every cache listing the image, caches in name
// order. A failed pull records the engine's message as the image's Reason and is retried with
// the kubelet's back-off (10s doubling to 5 minutes, on the injected clock); a change to a cache
// (Set with any field different) retries its images at once. Ready images are looked up again
// every Interval, and one removed behind infera's back is pulled again.
//
// # Ownership
//
// An image infera pulled is owned: that fact, with when it was pulled and last used, is kept in
// the state file (Dir/imagecache.json, written atomically), so it survives restarts. An image the
// engine already held when a cache first listed it is Ready but not owned, and is never removed
// or evicted, and does not count against imageCacheSize (it was on the disk before the cache).
// An owned image whose reference comes to name another image ID (re-tagged by someone else) is
// no longer owned. Only owned images are ever removed from the engine, and only by reference
// (never by ID, so another tag of the same image keeps it), and only when
//
//   - no cache wants it: every cache listing it has evicted it, or none lists it (its cache
//     was deleted: ECI deletes a cache's images with the cache), and
//   - no container, running or not, uses it (ImageUsers), and
//   - Set has been called since the start (before that every image would look unlisted).
//
// A removal the engine refuses is tried again on the next pass.
//
// # Eviction
//
// After every pull, on every Set and Touch, and every Interval (one minute) the policy (plan,
// pure: it takes `now` and a snapshot) runs over each cache's Ready images:
//
//  1. retentionDays: an owned image not used for that long (since its last Touch, or since it
//     was pulled when never used) is evicted. In ECI retentionDays ends the whole cache; here
//     it ends each image that went unused, which leaves the images replicas use cached.
//  2. imageCacheSize: while the owned images left exceed the size, the least recently used
//     (ties by reference) is evicted, as a disk of that size could not hold them. An image a
//     container uses is skipped; when what is left is still over, the cache's Message says so.
//
// An evicted image has State Evicted in that cache, with a Reason naming retentionDays or
// imageCacheSize, and is not pulled again until the cache changes (Set with a different spec,
// e.g. a larger imageCacheSize), or a replica uses it (Touch), or a restart brings a changed
// spec. Evictions persist with a fingerprint of the cache's spec. Eviction is per cache: an
// image two caches list and one evicts stays in the engine for the other, Ready there.
//
// # Phases
//
// A cache's phase (ImageCache status.phase, DescribeImageCaches' Status) is computed from its
// images' states, first match wins:
//
//	Failed / UpdateFailed   an image failed to pull or is not a valid reference
//	Preparing               never Ready, and no image looked up yet (Run has not reached it)
//	Creating / Updating     an image waits to be pulled or is pulling
//	Ready                   every image Ready or Evicted (Message lists the evicted)
//
// the Update forms for a cache that was Ready before (persisted). An image goes
//
//	Pending ──lacking──▶ Pulling ──pulled (owned)──▶ Ready ──retention / size──▶ Evicted
//	   │  ▲                 │                          ▲                          │
//	   │  └──back-off── Failed ◀──error                │                          │
//	   └──already in the engine (not owned)────────────┘◀──Set changes it / Touch─┘
//
// OnChange hears of every change of a state, phase or message, and of pull progress at most
// once a second; it must not block.
package imagecache
