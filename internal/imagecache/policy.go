package imagecache

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/infera-dev/infera/internal/eviction"
)

// This file is the package's policy: which images leave a cache, and how long a failed pull
// waits. It is pure: it reads no clock and calls no engine; the Manager passes `now` and a
// snapshot, and carries out what plan returns.

// cacheView is what the policy sees of one cache.
type cacheView struct {
	Name      string
	SizeBytes int64         // imageCacheSize in bytes; 0: unbounded
	SizeGiB   int           // the same, as the CR says it, for reasons
	Retention time.Duration // retentionDays; 0: forever
	Days      int           // the same, in days, for reasons
	// Images are the cache's images that are Ready and not evicted from it.
	Images []imageView
}

// imageView is one Ready image of a cache.
type imageView struct {
	Ref   string
	Bytes int64
	// LastUse is when a replica last started from the image, or when infera pulled it if none
	// has.
	LastUse time.Time
	Owned   bool // infera pulled it: only these are evicted, and only these count against the size
	InUse   bool // a container (running or not) uses it: never evicted
}

// decision is one image evicted from one cache.
type decision struct {
	Cache, Ref string
	Reason     string
}

// planResult is what plan decides.
type planResult struct {
	Evict []decision
	// Over holds, by cache, why the cache stays over its imageCacheSize: what is left is in
	// use.
	Over map[string]string
}

// plan decides, at now, which images each cache evicts: first every owned image not used for
// the cache's retention, then, while the owned images left exceed the cache's size, the least
// recently used of them (ties by reference). Images a container uses, and images infera did
// not pull, are never evicted; those infera did not pull do not count against the size.
func plan(now time.Time, caches []cacheView) planResult {
	var res planResult
	for _, c := range caches {
		var kept []imageView
		for _, im := range c.Images {
			if im.Owned && !im.InUse && c.Retention > 0 && now.Sub(im.LastUse) >= c.Retention {
				res.Evict = append(res.Evict, decision{Cache: c.Name, Ref: im.Ref,
					Reason: fmt.Sprintf("not used for %d days (retentionDays %d)", int(now.Sub(im.LastUse)/(24*time.Hour)), c.Days)})
				continue
			}
			kept = append(kept, im)
		}
		if c.SizeBytes <= 0 {
			continue
		}
		var used int64
		var entries []eviction.Entry
		for _, im := range kept {
			if !im.Owned {
				continue
			}
			used += im.Bytes
			entries = append(entries, eviction.Entry{Key: im.Ref, Bytes: im.Bytes, LastUsed: im.LastUse, Pinned: im.InUse})
		}
		// High and low watermarks at 1: evict down to the bound exactly, as a disk that size would.
		p := eviction.Plan(eviction.Usage{Quota: c.SizeBytes, Used: used}, entries, 1, 1)
		for _, ref := range p.Evict {
			res.Evict = append(res.Evict, decision{Cache: c.Name, Ref: ref,
				Reason: fmt.Sprintf("least recently used of images over imageCacheSize %d GiB", c.SizeGiB)})
		}
		if p.Short {
			if res.Over == nil {
				res.Over = map[string]string{}
			}
			res.Over[c.Name] = fmt.Sprintf("pulled images take %s, over imageCacheSize %d GiB: the rest are in use", gib(p.Used), c.SizeGiB)
		}
	}
	slices.SortStableFunc(res.Evict, func(a, b decision) int { return cmp.Compare(a.Cache, b.Cache) })
	return res
}

// Backoff is the wait between failed pulls of an image: Initial after the first failure,
// doubling after each one, never more than Max. The zero value is the kubelet's image pull
// back-off: 10s doubling to 5 minutes.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
}

// Default pull back-off, the kubelet's: its image back-off is flowcontrol.NewBackOff(backOffPeriod
// 10s, MaxContainerBackOff 300s).
const (
	DefaultBackoffInitial = 10 * time.Second
	DefaultBackoffMax     = 5 * time.Minute
)

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = DefaultBackoffInitial
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoffMax
	}
	b.Max = max(b.Max, b.Initial)
	return b
}

// Delay is the wait after the n-th failure in a row (n >= 1).
func (b Backoff) Delay(n int) time.Duration {
	b = b.withDefaults()
	d := b.Initial
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// gib formats bytes in GiB, as imageCacheSize is given.
func gib(b int64) string { return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30)) }
