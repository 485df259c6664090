package eviction

import (
	"cmp"
	"go/parser"
	"go/token"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func at(min int) time.Time { return t0.Add(time.Duration(min) * time.Minute) }

func TestPlan(t *testing.T) {
	tests := []struct {
		name      string
		usage     Usage
		entries   []Entry
		high, low float64
		want      []string
		wantUsed  int64
		wantShort bool
	}{
		{
			name:     "under high: nothing",
			usage:    Usage{Quota: 100, Used: 95},
			entries:  []Entry{{Key: "a", Bytes: 95, LastUsed: at(0)}},
			high:     0.95,
			low:      0.7,
			wantUsed: 95,
		},
		{
			name:     "exactly at high: nothing",
			usage:    Usage{Quota: 1000, Used: 800},
			entries:  []Entry{{Key: "a", Bytes: 800, LastUsed: at(0)}},
			high:     0.8,
			low:      0.6,
			wantUsed: 800,
		},
		{
			name:  "over high: least recently used first, down to low",
			usage: Usage{Quota: 100, Used: 96},
			entries: []Entry{
				{Key: "new", Bytes: 30, LastUsed: at(3)},
				{Key: "old", Bytes: 20, LastUsed: at(1)},
				{Key: "mid", Bytes: 30, LastUsed: at(2)},
				{Key: "other", Bytes: 16, LastUsed: at(4)},
			},
			high:     0.95,
			low:      0.7,
			want:     []string{"old", "mid"},
			wantUsed: 46,
		},
		{
			name:  "stops as soon as used reaches low",
			usage: Usage{Quota: 100, Used: 100},
			entries: []Entry{
				{Key: "a", Bytes: 30, LastUsed: at(1)},
				{Key: "b", Bytes: 30, LastUsed: at(2)},
				{Key: "c", Bytes: 40, LastUsed: at(3)},
			},
			high:     0.9,
			low:      0.7,
			want:     []string{"a"},
			wantUsed: 70,
		},
		{
			name:  "never a pinned one, even the least recently used",
			usage: Usage{Quota: 100, Used: 100},
			entries: []Entry{
				{Key: "mounted", Bytes: 50, LastUsed: at(0), Pinned: true},
				{Key: "b", Bytes: 25, LastUsed: at(2)},
				{Key: "c", Bytes: 25, LastUsed: at(3)},
			},
			high:     0.95,
			low:      0.7,
			want:     []string{"b", "c"}, // 75 after b is still over 70
			wantUsed: 50,
		},
		{
			name:  "pinned alone exceed low: evict every unpinned, report short",
			usage: Usage{Quota: 100, Used: 100},
			entries: []Entry{
				{Key: "fetching", Bytes: 80, LastUsed: at(9), Pinned: true},
				{Key: "b", Bytes: 10, LastUsed: at(2)},
				{Key: "a", Bytes: 10, LastUsed: at(1)},
			},
			high:      0.95,
			low:       0.7,
			want:      []string{"a", "b"},
			wantUsed:  80,
			wantShort: true,
		},
		{
			name:  "ties in last use break by key",
			usage: Usage{Quota: 10, Used: 10},
			entries: []Entry{
				{Key: "z", Bytes: 5, LastUsed: at(1)},
				{Key: "y", Bytes: 5, LastUsed: at(1)},
			},
			high:     0.9,
			low:      0.5,
			want:     []string{"y"},
			wantUsed: 5,
		},
		{
			name:  "used counts bytes no entry holds (a reservation)",
			usage: Usage{Quota: 100, Used: 120},
			entries: []Entry{
				{Key: "a", Bytes: 30, LastUsed: at(1)},
				{Key: "b", Bytes: 30, LastUsed: at(2)},
			},
			high:      0.95,
			low:       0.7,
			want:      []string{"a", "b"},
			wantUsed:  60,
			wantShort: false,
		},
		{
			name:     "low above high is taken as high",
			usage:    Usage{Quota: 100, Used: 100},
			entries:  []Entry{{Key: "a", Bytes: 5, LastUsed: at(1)}, {Key: "b", Bytes: 5, LastUsed: at(2)}},
			high:     0.95,
			low:      0.99,
			want:     []string{"a"},
			wantUsed: 95,
		},
		{
			name:      "zero quota: everything unpinned goes",
			usage:     Usage{Quota: 0, Used: 10},
			entries:   []Entry{{Key: "a", Bytes: 10, LastUsed: at(1)}},
			high:      0.95,
			low:       0.7,
			want:      []string{"a"},
			wantUsed:  0,
			wantShort: false,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Plan(tt.usage, tt.entries, tt.high, tt.low)
			if !slices.Equal(got.Evict, tt.want) || got.Used != tt.wantUsed || got.Short != tt.wantShort {
				t.Errorf("Plan = %+v, want evict %v used %d short %v", got, tt.want, tt.wantUsed, tt.wantShort)
			}
		})
	}
}

// TestPlanProperties checks Plan on seeded random tiers: it never evicts a pinned dataset; it
// evicts only past the high watermark; when evicting every unpinned dataset would bring usage to
// low it does, and evicts no more than needed; what it evicts is a prefix of the unpinned
// datasets in least-recently-used order.
func TestPlanProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 5000 {
		quota := rng.Int64N(1<<40) + 1
		high := 0.5 + rng.Float64()*0.5
		low := rng.Float64() * high
		n := rng.IntN(40)
		entries := make([]Entry, n)
		var sum, pinned int64
		for i := range entries {
			e := Entry{
				Key:      "ds-" + strconv.Itoa(i),
				Bytes:    rng.Int64N(quota/4 + 1),
				LastUsed: at(rng.IntN(60)),
				Pinned:   rng.IntN(4) == 0,
			}
			entries[i] = e
			sum += e.Bytes
			if e.Pinned {
				pinned += e.Bytes
			}
		}
		extra := rng.Int64N(quota/8 + 1) // bytes reserved outside the entries
		u := Usage{Quota: quota, Used: sum + extra}
		res := Plan(u, slices.Clone(entries), high, low)

		byKey := map[string]Entry{}
		for _, e := range entries {
			byKey[e.Key] = e
		}
		var freed int64
		for _, k := range res.Evict {
			if byKey[k].Pinned {
				t.Fatalf("iter %d: evicted pinned %s", iter, k)
			}
			freed += byKey[k].Bytes
		}
		if res.Used != u.Used-freed {
			t.Fatalf("iter %d: Used %d, want %d", iter, res.Used, u.Used-freed)
		}
		if float64(u.Used) <= high*float64(quota) {
			if len(res.Evict) > 0 {
				t.Fatalf("iter %d: evicted %v under the high watermark", iter, res.Evict)
			}
			continue
		}
		lowBytes := low * float64(quota)
		possible := float64(u.Used-(sum-pinned)) <= lowBytes
		if possible && (res.Short || float64(res.Used) > lowBytes) {
			t.Fatalf("iter %d: could reach low %.0f but left %d (short %v)", iter, lowBytes, res.Used, res.Short)
		}
		if !possible && !res.Short {
			t.Fatalf("iter %d: cannot reach low but Short is false", iter)
		}
		if len(res.Evict) > 0 {
			last := byKey[res.Evict[len(res.Evict)-1]]
			if float64(res.Used+last.Bytes) <= lowBytes {
				t.Fatalf("iter %d: evicted %s although usage was already at low", iter, last.Key)
			}
		}
		var lru []string
		for _, e := range entries {
			if !e.Pinned {
				lru = append(lru, e.Key)
			}
		}
		slices.SortFunc(lru, func(a, b string) int {
			return cmp.Or(byKey[a].LastUsed.Compare(byKey[b].LastUsed), cmp.Compare(a, b))
		})
		if !slices.Equal(res.Evict, lru[:len(res.Evict)]) {
			t.Fatalf("iter %d: evicted %v, not a prefix of LRU order %v", iter, res.Evict, lru)
		}
	}
}

// TestPure keeps the policy free of I/O: its files import no os, net or os/exec, and no time
// source other than values passed in.
func TestPure(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		parsed, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range parsed.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if p == "os" || p == "syscall" || p == "os/exec" || p == "net" || strings.HasPrefix(p, "net/") ||
				strings.HasPrefix(p, "io/") || strings.HasPrefix(p, "github.com/infera-dev/infera/") {
				t.Errorf("%s imports %s: the eviction policy is pure", f, p)
			}
		}
	}
}

func BenchmarkPlan1000(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	entries := make([]Entry, 1000)
	var used int64
	for i := range entries {
		entries[i] = Entry{Key: "ns/ds-" + strconv.Itoa(i), Bytes: rng.Int64N(1 << 30), LastUsed: at(rng.IntN(10000)), Pinned: i%10 == 0}
		used += entries[i].Bytes
	}
	u := Usage{Quota: used, Used: used}
	b.ReportAllocs()
	for b.Loop() {
		Plan(u, entries, 0.95, 0.7)
	}
}
