package imagecache

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPlan(t *testing.T) {
	now := t0.Add(30 * 24 * time.Hour)
	day := 24 * time.Hour
	img := func(ref string, gib int64, age time.Duration, owned, inUse bool) imageView {
		return imageView{Ref: ref, Bytes: gib << 30, LastUse: now.Add(-age), Owned: owned, InUse: inUse}
	}
	tests := []struct {
		name  string
		cache cacheView
		evict []string // refs, in order
		over  bool
	}{
		{
			name:  "unbounded, forever",
			cache: cacheView{Images: []imageView{img("a", 100, 1000*day, true, false)}},
		},
		{
			name:  "retention: only the owned, unused past it",
			cache: cacheView{Retention: 7 * day, Days: 7, Images: []imageView{img("old", 1, 8*day, true, false), img("fresh", 1, 6*day, true, false), img("edge", 1, 7*day, true, false), img("notmine", 1, 99*day, false, false), img("used", 1, 99*day, true, true)}},
			evict: []string{"old", "edge"},
		},
		{
			name:  "size: under the bound",
			cache: cacheView{SizeBytes: 3 << 30, SizeGiB: 3, Images: []imageView{img("a", 1, day, true, false), img("b", 2, 2*day, true, false)}},
		},
		{
			name:  "size: least recently used first, down to the bound",
			cache: cacheView{SizeBytes: 3 << 30, SizeGiB: 3, Images: []imageView{img("a", 1, 1*day, true, false), img("b", 2, 3*day, true, false), img("c", 1, 2*day, true, false), img("d", 1, 0, true, false)}},
			evict: []string{"b"},
		},
		{
			name:  "size: ties by reference",
			cache: cacheView{SizeBytes: 1 << 30, SizeGiB: 1, Images: []imageView{img("z", 1, day, true, false), img("y", 1, day, true, false)}},
			evict: []string{"y"},
		},
		{
			name:  "size: images infera did not pull are free and stay",
			cache: cacheView{SizeBytes: 2 << 30, SizeGiB: 2, Images: []imageView{img("base", 50, 9*day, false, false), img("a", 1, day, true, false), img("b", 1, 2*day, true, false)}},
		},
		{
			name:  "size: in-use images are skipped",
			cache: cacheView{SizeBytes: 2 << 30, SizeGiB: 2, Images: []imageView{img("old", 2, 9*day, true, true), img("a", 1, day, true, false), img("b", 1, 2*day, true, false)}},
			evict: []string{"b", "a"},
		},
		{
			name:  "size: all in use, still over",
			cache: cacheView{SizeBytes: 1 << 30, SizeGiB: 1, Images: []imageView{img("a", 1, day, true, true), img("b", 1, 2*day, true, true)}},
			over:  true,
		},
		{
			name:  "retention first, then size over what is left",
			cache: cacheView{SizeBytes: 2 << 30, SizeGiB: 2, Retention: 7 * day, Days: 7, Images: []imageView{img("expired", 5, 8*day, true, false), img("a", 1, day, true, false), img("b", 1, 2*day, true, false)}},
			evict: []string{"expired"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cache.Name = "c"
			res := plan(now, []cacheView{tt.cache})
			var got []string
			for _, d := range res.Evict {
				got = append(got, d.Ref)
				if d.Cache != "c" || d.Reason == "" {
					t.Errorf("decision %+v", d)
				}
				if tt.cache.Retention > 0 && d.Ref == "expired" && !strings.Contains(d.Reason, "retentionDays 7") {
					t.Errorf("reason %q", d.Reason)
				}
			}
			if !slices.Equal(got, tt.evict) {
				t.Errorf("evict %q, want %q", got, tt.evict)
			}
			if _, over := res.Over["c"]; over != tt.over {
				t.Errorf("over %v (%v), want %v", over, res.Over, tt.over)
			}
		})
	}
}

func TestBackoffDelay(t *testing.T) {
	tests := []struct {
		b    Backoff
		n    int
		want time.Duration
	}{
		{Backoff{}, 1, 10 * time.Second},
		{Backoff{}, 2, 20 * time.Second},
		{Backoff{}, 5, 160 * time.Second},
		{Backoff{}, 6, 5 * time.Minute},
		{Backoff{}, 100, 5 * time.Minute},
		{Backoff{Initial: time.Second, Max: 4 * time.Second}, 3, 4 * time.Second},
		{Backoff{Initial: time.Minute, Max: time.Second}, 1, time.Minute}, // Max below Initial is Initial
	}
	for _, tt := range tests {
		if got := tt.b.Delay(tt.n); got != tt.want {
			t.Errorf("%+v.Delay(%d) = %v, want %v", tt.b, tt.n, got, tt.want)
		}
	}
}
