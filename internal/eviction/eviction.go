// Package eviction is the model cache's eviction policy: which cached datasets leave a tier of
// the tiered store when it passes its high watermark. It is pure: it reads no clock and touches
// no file; the caller measures usage (bytes on disk) and passes each dataset's last use, and
// carries out what Plan returns.
//
// The rule is Fluid's tiered store watermarks (as Alluxio applies them to a tier): when the bytes
// used exceed high × quota, evict least-recently-used data until used is at most low × quota.
// Here the unit of eviction is a whole dataset, because a replica needs every file of its model,
// and a pinned dataset (mounted by a running replica, or being fetched) is never evicted.
package eviction

import (
	"cmp"
	"slices"
	"time"
)

// Usage is one tier directory's quota and the bytes its datasets use, counted on disk
// (st_blocks × 512), including what is reserved for datasets being fetched.
type Usage struct {
	Quota int64
	Used  int64
}

// Entry is one dataset cached in the tier.
type Entry struct {
	Key      string    // "namespace/name", what Result.Evict lists
	Bytes    int64     // on disk; Used counts them
	LastUsed time.Time // last time a replica mounted or released it, or its fetch completed
	Pinned   bool      // mounted by a running replica or being fetched: never evicted
}

// Result is what Plan decides.
type Result struct {
	// Evict lists the keys to evict, least recently used first; nil when used is at or under
	// the high watermark.
	Evict []string
	// Used is the bytes used once Evict is carried out.
	Used int64
	// Short is true when evicting every unpinned dataset still leaves Used above low × quota:
	// pinned datasets alone hold more than the low watermark allows.
	Short bool
}

// Plan returns the datasets to evict from a tier at u when it is past its high watermark:
// unpinned entries in least-recently-used order (ties by key) until Used <= low × quota. When
// that cannot be reached it evicts every unpinned entry and sets Short. Watermarks are ratios
// of the quota; a low above high is taken as high.
func Plan(u Usage, entries []Entry, high, low float64) Result {
	low = min(low, high)
	res := Result{Used: u.Used}
	if float64(u.Used) <= high*float64(u.Quota) {
		return res
	}
	target := low * float64(u.Quota)
	order := make([]int, 0, len(entries))
	for i := range entries {
		if !entries[i].Pinned {
			order = append(order, i)
		}
	}
	slices.SortFunc(order, func(a, b int) int {
		ea, eb := &entries[a], &entries[b]
		return cmp.Or(ea.LastUsed.Compare(eb.LastUsed), cmp.Compare(ea.Key, eb.Key))
	})
	for _, i := range order {
		if float64(res.Used) <= target {
			break
		}
		res.Evict = append(res.Evict, entries[i].Key)
		res.Used -= entries[i].Bytes
	}
	res.Short = float64(res.Used) > target
	return res
}
