package placement

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Candidate is a running replica that might hand its GPU memory over. What it would free
// is read from the reservations under its name.
type Candidate struct {
	Replica  string
	Revision string
	InFlight int       // requests in flight now
	LastUsed time.Time // when its last request ended (or it became ready, if never used)
	// AboveMinScale: its revision keeps more replicas than min-scale without it.
	AboveMinScale bool
	// Evictable: the revision's infera.dev/gpu-evictable annotation is not "false".
	Evictable bool
}

// NoVictims is Victims' error: why no set of idle replicas makes room.
type NoVictims struct {
	Request Request
	Fit     *NoFit // the GPUs before any hand-off
	// The replicas holding memory that may not be handed off, by reason, sorted.
	Busy         []string // requests in flight ("r (2 in flight)")
	MinScale     []string // at or below min-scale
	Protected    []string // infera.dev/gpu-evictable: "false"
	SameRevision []string // the request's own revision
	Unknown      []string // hold reservations but are not candidates (starting, stopping)
	// TooSmall: no GPU could take the request even empty.
	TooSmall bool
}

func (e *NoVictims) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "no idle replicas can hand over %s", e.Request)
	if e.TooSmall {
		b.WriteString(" (no GPU is large enough)")
	}
	if e.Fit != nil {
		b.WriteString(": ")
		b.WriteString(e.Fit.Error())
	}
	for _, l := range []struct {
		what string
		who  []string
	}{
		{"busy", e.Busy}, {"at min-scale", e.MinScale}, {"not evictable", e.Protected},
		{"same revision", e.SameRevision}, {"not candidates", e.Unknown},
	} {
		if len(l.who) > 0 {
			fmt.Fprintf(&b, "; %s: %s", l.what, strings.Join(l.who, ", "))
		}
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrNoVictims) hold.
func (e *NoVictims) Unwrap() error { return ErrNoVictims }

// holding is one replica's memory on one GPU.
type holding struct {
	c     *Candidate // nil: not a candidate
	name  string
	bytes int64
}

// Victims returns the replicas to stop, least recently used first, so that req fits: nil
// when it fits already. Only idle candidates may go (no request in flight, above their
// min-scale, evictable, not of req's revision). It looks for the fewest evictions,
// preferring the least recently used replicas, on as few GPUs as the request spans: for
// each GPU it finds the smallest set of its eligible holders that frees enough (the
// earliest in LRU order among sets of that size), then takes the GPUs whose sets are
// smallest, then whose newest victim is oldest, then the lowest index. When no set
// exists the error is a *NoVictims.
func Victims(inv []GPU, reserved []Reservation, req Request, candidates []Candidate) ([]string, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	if req.Empty() {
		return nil, nil
	}
	st, err := states(inv, reserved)
	if err != nil {
		return nil, err
	}
	picked, fit := pick(st, req)
	if picked != nil {
		return nil, nil
	}

	byName := make(map[string]*Candidate, len(candidates))
	for i := range candidates {
		if _, dup := byName[candidates[i].Replica]; !dup {
			byName[candidates[i].Replica] = &candidates[i]
		}
	}
	type key struct {
		gpu     int
		replica string
	}
	held := make([][]holding, len(st))
	at := make(map[key]int, len(reserved))
	for _, r := range reserved {
		i := position(st, r.GPU)
		if i < 0 {
			continue
		}
		b := r.MemoryBytes
		if r.Whole {
			b = st[i].Total
		}
		if j, ok := at[key{i, r.Replica}]; ok {
			held[i][j].bytes += b
			continue
		}
		at[key{i, r.Replica}] = len(held[i])
		held[i] = append(held[i], holding{c: byName[r.Replica], name: r.Replica, bytes: b})
	}

	e := &NoVictims{Request: req}
	seen := map[string]bool{}
	eligible := func(h holding) bool {
		why := ""
		switch c := h.c; {
		case c == nil:
			why = "unknown"
		case c.Revision == req.Revision:
			why = "same"
		case c.InFlight > 0:
			why = "busy"
		case !c.AboveMinScale:
			why = "min"
		case !c.Evictable:
			why = "protected"
		}
		if why != "" && !seen[h.name] {
			seen[h.name] = true
			switch why {
			case "unknown":
				e.Unknown = append(e.Unknown, h.name)
			case "same":
				e.SameRevision = append(e.SameRevision, h.name)
			case "busy":
				e.Busy = append(e.Busy, fmt.Sprintf("%s (%d in flight)", h.name, h.c.InFlight))
			case "min":
				e.MinScale = append(e.MinScale, h.name)
			case "protected":
				e.Protected = append(e.Protected, h.name)
			}
		}
		return why == ""
	}

	n, share := req.gpus()
	type plan struct {
		s      *state
		evict  []*Candidate
		newest time.Time
	}
	var plans []plan
	tooSmall := true
	for i := range st {
		s := &st[i]
		var ok []holding
		all := true
		for _, h := range held[i] {
			if eligible(h) {
				ok = append(ok, h)
			} else {
				all = false
			}
		}
		var set []*Candidate
		if req.WholeGPUs > 0 {
			tooSmall = false
			if !all {
				continue
			}
			for _, h := range ok {
				set = append(set, h.c)
			}
		} else {
			if s.Total < share {
				continue
			}
			tooSmall = false
			var feasible bool
			set, feasible = fewest(ok, share-s.Free)
			if !feasible {
				continue
			}
		}
		p := plan{s: s, evict: set}
		for _, c := range set {
			if c.LastUsed.After(p.newest) {
				p.newest = c.LastUsed
			}
		}
		plans = append(plans, p)
	}
	slices.SortFunc(e.Busy, strings.Compare)
	for _, l := range [][]string{e.MinScale, e.Protected, e.SameRevision, e.Unknown} {
		slices.Sort(l)
	}
	if len(plans) < n {
		e.Fit, e.TooSmall = noFit(st, req, fit), tooSmall
		return nil, e
	}
	slices.SortFunc(plans, func(a, b plan) int {
		return cmp.Or(cmp.Compare(len(a.evict), len(b.evict)), a.newest.Compare(b.newest), cmp.Compare(a.s.Index, b.s.Index))
	})
	var victims []*Candidate
	for _, p := range plans[:n] {
		for _, c := range p.evict {
			if !slices.Contains(victims, c) {
				victims = append(victims, c)
			}
		}
	}
	slices.SortFunc(victims, lru)
	out := make([]string, len(victims))
	for i, c := range victims {
		out[i] = c.Replica
	}
	return out, nil
}

// lru orders candidates least recently used first, then by name.
func lru(a, b *Candidate) int {
	return cmp.Or(a.LastUsed.Compare(b.LastUsed), cmp.Compare(a.Replica, b.Replica))
}

// fewest picks the fewest holders whose bytes add up to need (nothing when need <= 0);
// among sets of that size, the earliest in LRU order (lexicographically). false when all
// of them together are not enough.
func fewest(hs []holding, need int64) ([]*Candidate, bool) {
	if need <= 0 {
		return nil, true
	}
	slices.SortFunc(hs, func(a, b holding) int { return lru(a.c, b.c) })
	sizes := make([]int64, len(hs))
	for i, h := range hs {
		sizes[i] = h.bytes
	}
	// k: the fewest that can reach need, taking the largest first.
	desc := slices.Clone(sizes)
	slices.SortFunc(desc, func(a, b int64) int { return cmp.Compare(b, a) })
	k, sum := 0, int64(0)
	for k < len(desc) && sum < need {
		sum += desc[k]
		k++
	}
	if sum < need {
		return nil, false
	}
	// Walk in LRU order, taking a holder whenever the rest can still be completed with
	// the largest of the holders after it (rest: those, largest first).
	rest := slices.Clone(sizes)
	slices.SortFunc(rest, func(a, b int64) int { return cmp.Compare(b, a) })
	var set []*Candidate
	left := need
	for i := 0; i < len(hs) && k > 0; i++ {
		j, _ := slices.BinarySearchFunc(rest, sizes[i], func(a, b int64) int { return cmp.Compare(b, a) })
		rest = slices.Delete(rest, j, j+1)
		var top int64
		for _, x := range rest[:min(k-1, len(rest))] {
			top += x
		}
		if r := left - sizes[i]; r <= 0 || top >= r {
			set = append(set, hs[i].c)
			left, k = r, k-1
			if left <= 0 {
				break
			}
		}
	}
	return set, left <= 0
}
