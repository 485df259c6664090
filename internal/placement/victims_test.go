package placement

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)

// idle is an evictable idle candidate of its own revision, last used at t0+min minutes.
func idle(r string, min int) Candidate {
	return Candidate{Replica: r, Revision: "rev-" + r, LastUsed: t0.Add(time.Duration(min) * time.Minute), AboveMinScale: true, Evictable: true}
}

func TestVictims(t *testing.T) {
	busy := idle("busy", 0)
	busy.InFlight = 2
	pinned := idle("pinned", 0)
	pinned.AboveMinScale = false
	protected := idle("protected", 0)
	protected.Evictable = false
	mine := idle("mine", 0)
	mine.Revision = "rev-new"
	tests := []struct {
		name     string
		inv      []GPU
		reserved []Reservation
		req      Request
		cands    []Candidate
		want     []string
		err      error
		msg      []string // substrings of the error
	}{
		{name: "fits already", inv: gpus(1, 80), reserved: []Reservation{share("a", 0, 40)},
			req: Request{GPUMemGiB: 40}, cands: []Candidate{idle("a", 0)}, want: nil},
		{name: "one is enough: the least recently used", inv: gpus(1, 80),
			reserved: []Reservation{share("a", 0, 30), share("b", 0, 30)},
			req:      Request{GPUMemGiB: 40}, cands: []Candidate{idle("b", 5), idle("a", 1)}, want: []string{"a"}},
		{name: "fewest beats least recently used", inv: gpus(1, 80),
			reserved: []Reservation{share("a", 0, 10), share("b", 0, 10), share("c", 0, 60)},
			req:      Request{GPUMemGiB: 60}, cands: []Candidate{idle("a", 1), idle("b", 2), idle("c", 9)}, want: []string{"c"}},
		{name: "among sets of the fewest, the least recently used", inv: gpus(1, 80),
			reserved: []Reservation{share("a", 0, 30), share("b", 0, 10), share("c", 0, 20), share("d", 0, 20)},
			// 80 - 80 = 0 free; 45 GiB needs two: a+c (LRU-first) over a+d or c+d.
			req: Request{GPUMemGiB: 45}, cands: []Candidate{idle("a", 1), idle("b", 2), idle("c", 3), idle("d", 4)},
			want: []string{"a", "c"}},
		{name: "one GPU with fewer evictions over another", inv: gpus(2, 80),
			reserved: []Reservation{share("a", 0, 40), share("b", 0, 40), share("c", 1, 70), share("d", 1, 10)},
			req:      Request{GPUMemGiB: 70}, cands: []Candidate{idle("a", 1), idle("b", 2), idle("c", 9), idle("d", 3)},
			want: []string{"c"}},
		{name: "equal counts: the GPU whose victims are older", inv: gpus(2, 80),
			reserved: []Reservation{share("a", 0, 80), share("b", 1, 80)},
			req:      Request{GPUMemGiB: 50}, cands: []Candidate{idle("a", 7), idle("b", 3)}, want: []string{"b"}},
		{name: "busy, pinned and protected replicas stay", inv: gpus(2, 80),
			reserved: []Reservation{share("busy", 0, 70), share("a", 0, 10), share("pinned", 1, 40), share("b", 1, 20), share("c", 1, 20)},
			req:      Request{GPUMemGiB: 30}, cands: []Candidate{busy, pinned, idle("a", 1), idle("b", 5), idle("c", 4)},
			want: []string{"c", "b"}},
		{name: "nothing eligible", inv: gpus(2, 80),
			reserved: []Reservation{share("busy", 0, 70), share("pinned", 0, 10), share("protected", 1, 40), share("mine", 1, 30), share("ghost", 1, 10)},
			req:      Request{Revision: "rev-new", GPUMemGiB: 30}, cands: []Candidate{busy, pinned, protected, mine},
			err: ErrNoVictims, msg: []string{"no idle replicas can hand over 30 GiB: 0/2 GPUs fit 30 GiB: GPU 0 has 0 GiB free of 80 GiB",
				"busy: busy (2 in flight)", "at min-scale: pinned", "not evictable: protected", "same revision: mine", "not candidates: ghost"}},
		{name: "too large for any GPU", inv: gpus(2, 80), reserved: []Reservation{share("a", 0, 1)},
			req: Request{GPUMemGiB: 100}, cands: []Candidate{idle("a", 0)},
			err: ErrNoVictims, msg: []string{"(no GPU is large enough)"}},
		{name: "whole GPU: every holder of one GPU goes", inv: gpus(2, 80),
			reserved: []Reservation{share("a", 0, 10), share("b", 0, 10), share("busy", 1, 5)},
			req:      Request{WholeGPUs: 1}, cands: []Candidate{idle("b", 1), idle("a", 2), busy}, want: []string{"b", "a"}},
		{name: "whole GPU held whole by an idle replica", inv: gpus(1, 80), reserved: []Reservation{whole("w", 0, 80)},
			req: Request{GPUMemGiB: 10}, cands: []Candidate{idle("w", 0)}, want: []string{"w"}},
		{name: "gpu-count: two GPUs, the cheapest ones", inv: gpus(3, 80),
			reserved: []Reservation{share("a", 0, 80), share("b", 1, 40), share("c", 1, 40), share("d", 2, 75)},
			req:      Request{GPUMemGiB: 20, GPUCount: 2}, cands: []Candidate{idle("a", 1), idle("b", 2), idle("c", 3), idle("d", 4)},
			// GPU 1 needs one of b or c (b, older), GPU 2 needs d, GPU 0 needs a: a and b are oldest.
			want: []string{"a", "b"}},
		{name: "a replica spread over GPUs frees all of them", inv: gpus(2, 80),
			reserved: []Reservation{share("s", 0, 40), share("s", 1, 40), share("x", 0, 40), share("y", 1, 40)},
			req:      Request{GPUMemGiB: 80, GPUCount: 2}, cands: []Candidate{idle("s", 1), idle("x", 2), idle("y", 3)},
			want: []string{"s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.req.Replica == "" {
				tt.req.Replica = "new"
			}
			if tt.req.Revision == "" {
				tt.req.Revision = "rev-new"
			}
			got, err := Victims(tt.inv, tt.reserved, tt.req, tt.cands)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				for _, m := range tt.msg {
					if !strings.Contains(err.Error(), m) {
						t.Errorf("error %q lacks %q", err, m)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("victims %v, want %v", got, tt.want)
			}
			// Once they are gone, the request fits.
			left := slices.DeleteFunc(slices.Clone(tt.reserved), func(r Reservation) bool { return slices.Contains(got, r.Replica) })
			if _, err := Place(tt.inv, left, tt.req); err != nil {
				t.Errorf("after evicting %v: %v", got, err)
			}
		})
	}
}

// TestFewestIsMinimal checks fewest against brute force on small sets.
func TestFewestIsMinimal(t *testing.T) {
	sizes := [][]int64{{5, 1, 4, 2, 3}, {10, 10, 1, 1, 1, 9}, {3, 3, 3}, {7}, {1, 2, 4, 8, 16}}
	for _, sz := range sizes {
		var total int64
		for _, s := range sz {
			total += s
		}
		for need := int64(1); need <= total+1; need++ {
			hs := make([]holding, len(sz))
			for i, s := range sz {
				c := idle(string(rune('a'+i)), i)
				hs[i] = holding{c: &c, name: c.Replica, bytes: s}
			}
			set, ok := fewest(hs, need)
			best := -1
			for mask := 1; mask < 1<<len(sz); mask++ {
				var sum int64
				for i := range sz {
					if mask&(1<<i) != 0 {
						sum += sz[i]
					}
				}
				if n := popcount(mask); sum >= need && (best < 0 || n < best) {
					best = n
				}
			}
			if (best >= 0) != ok || (ok && len(set) != best) {
				t.Errorf("sizes %v need %d: got %d (ok %v), brute force %d", sz, need, len(set), ok, best)
			}
			var freed int64
			for _, c := range set {
				freed += sz[c.Replica[0]-'a']
			}
			if ok && freed < need {
				t.Errorf("sizes %v need %d: set frees %d", sz, need, freed)
			}
		}
	}
}

func popcount(m int) int {
	n := 0
	for ; m != 0; m &= m - 1 {
		n++
	}
	return n
}
