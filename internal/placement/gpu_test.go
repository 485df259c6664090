package placement

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// gpus is n GPUs of size GiB each, with UUIDs GPU-0, GPU-1, ...
func gpus(n int, size int64) []GPU {
	inv := make([]GPU, n)
	for i := range inv {
		inv[i] = GPU{Index: i, UUID: fmt.Sprintf("GPU-%d", i), Name: "H100", MemoryBytes: size * GiB}
	}
	return inv
}

// share is replica r holding g GiB on GPU i.
func share(r string, i int, g int64) Reservation {
	return Reservation{Replica: r, Revision: "rev-" + r, GPU: i, MemoryBytes: g * GiB}
}

func whole(r string, i int, size int64) Reservation {
	return Reservation{Replica: r, Revision: "rev-" + r, GPU: i, MemoryBytes: size * GiB, Whole: true}
}

// on lists the GPUs of a placement and the GiB on each, "0:10" or "1:W".
func on(p Placement) []string {
	var out []string
	for _, r := range p.Reservations {
		if r.Whole {
			out = append(out, fmt.Sprintf("%d:W", r.GPU))
		} else {
			out = append(out, fmt.Sprintf("%d:%s", r.GPU, gib(r.MemoryBytes)))
		}
	}
	return out
}

func TestPlace(t *testing.T) {
	h100 := []GPU{{Index: 0, UUID: "GPU-a", MemoryBytes: 81559 * MiB}}
	sparse := []GPU{{Index: 2, MemoryBytes: 40 * GiB, Declared: true}, {Index: 5, MemoryBytes: 40 * GiB, Declared: true}}
	tests := []struct {
		name     string
		inv      []GPU
		reserved []Reservation
		req      Request
		want     []string
		err      error
		msg      string
	}{
		{name: "no GPU asked", inv: gpus(2, 80), req: Request{}, want: nil},
		{name: "empty GPUs: lowest index", inv: gpus(2, 80), req: Request{GPUMemGiB: 3}, want: []string{"0:3 GiB"}},
		{name: "packs onto the fullest that fits", inv: gpus(2, 80),
			reserved: []Reservation{share("a", 0, 60), share("b", 1, 30)},
			req:      Request{GPUMemGiB: 10}, want: []string{"0:10 GiB"}},
		{name: "skips the fullest when it is too full", inv: gpus(2, 80),
			reserved: []Reservation{share("a", 0, 60), share("b", 1, 30)},
			req:      Request{GPUMemGiB: 30}, want: []string{"1:30 GiB"}},
		{name: "exact fit", inv: gpus(2, 80),
			reserved: []Reservation{share("a", 0, 60), share("b", 1, 30)},
			req:      Request{GPUMemGiB: 20}, want: []string{"0:20 GiB"}},
		{name: "no fit names every GPU", inv: gpus(2, 80),
			reserved: []Reservation{share("a", 0, 60), share("b", 1, 30)},
			req:      Request{GPUMemGiB: 60}, err: ErrNoFit,
			msg: "0/2 GPUs fit 60 GiB: GPU 0 has 20 GiB free of 80 GiB, GPU 1 has 50 GiB free of 80 GiB"},
		{name: "ties go to the lowest index", inv: gpus(3, 80),
			reserved: []Reservation{share("a", 0, 10), share("b", 1, 40), share("c", 2, 40)},
			req:      Request{GPUMemGiB: 20}, want: []string{"1:20 GiB"}},
		{name: "several shares add up", inv: gpus(2, 80),
			reserved: []Reservation{share("a", 1, 30), share("b", 1, 30), share("c", 0, 10)},
			req:      Request{GPUMemGiB: 20}, want: []string{"1:20 GiB"}},
		{name: "a GPU held whole takes no shares", inv: gpus(2, 80),
			reserved: []Reservation{whole("w", 0, 80), share("b", 1, 70)},
			req:      Request{GPUMemGiB: 20}, err: ErrNoFit,
			msg: "0/2 GPUs fit 20 GiB: GPU 0 is held whole by w, GPU 1 has 10 GiB free of 80 GiB"},
		{name: "gpu-count spreads evenly over the fullest that fit", inv: gpus(4, 80),
			reserved: []Reservation{share("a", 1, 70), share("b", 2, 75), share("c", 3, 77)},
			req:      Request{GPUMemGiB: 8, GPUCount: 2}, want: []string{"1:4 GiB", "2:4 GiB"}},
		{name: "gpu-count 1 is one GPU", inv: gpus(2, 80), req: Request{GPUMemGiB: 8, GPUCount: 1}, want: []string{"0:8 GiB"}},
		{name: "gpu-count larger than the fitting GPUs", inv: gpus(2, 80),
			reserved: []Reservation{share("a", 1, 78)},
			req:      Request{GPUMemGiB: 12, GPUCount: 3}, err: ErrNoFit,
			msg: "1/2 GPUs fit 4 GiB, 3 needed: GPU 0 has 80 GiB free of 80 GiB, GPU 1 has 2 GiB free of 80 GiB"},
		{name: "gpu-mem not divisible by gpu-count", inv: gpus(2, 80), req: Request{GPUMemGiB: 7, GPUCount: 2}, err: ErrInvalidRequest},
		{name: "gpu-count without gpu-mem", inv: gpus(2, 80), req: Request{GPUCount: 2}, err: ErrInvalidRequest},
		{name: "whole GPU: the idle one", inv: gpus(2, 80), reserved: []Reservation{share("a", 0, 1)},
			req: Request{WholeGPUs: 1}, want: []string{"1:W"}},
		{name: "whole GPUs: lowest idle indices", inv: gpus(4, 80), reserved: []Reservation{whole("w", 1, 80)},
			req: Request{WholeGPUs: 2}, want: []string{"0:W", "2:W"}},
		{name: "whole GPUs: too few idle", inv: gpus(2, 80), reserved: []Reservation{share("a", 0, 1)},
			req: Request{WholeGPUs: 2}, err: ErrNoFit,
			msg: "1/2 GPUs idle, 2 whole GPUs needed: GPU 0 has 79 GiB free of 80 GiB, GPU 1 has 80 GiB free of 80 GiB"},
		{name: "shares and whole together", inv: gpus(2, 80), req: Request{GPUMemGiB: 1, WholeGPUs: 1}, err: ErrInvalidRequest},
		{name: "negative", inv: gpus(2, 80), req: Request{GPUMemGiB: -1}, err: ErrInvalidRequest},
		{name: "duplicate inventory index", inv: append(gpus(2, 80), GPU{Index: 1}), req: Request{GPUMemGiB: 1}, err: ErrInvalidRequest},
		{name: "reservations on unknown GPUs are ignored", inv: gpus(1, 80), reserved: []Reservation{share("a", 7, 80)},
			req: Request{GPUMemGiB: 80}, want: []string{"0:80 GiB"}},
		{name: "capacity is whole GiB of the device", inv: h100, req: Request{GPUMemGiB: 80}, err: ErrNoFit,
			msg: "0/1 GPUs fit 80 GiB: GPU 0 has 79 GiB free of 79 GiB"},
		{name: "79 of an H100 fit", inv: h100, req: Request{GPUMemGiB: 79}, want: []string{"0:79 GiB"}},
		{name: "indices need not be 0..n-1", inv: sparse, reserved: []Reservation{share("a", 5, 10)},
			req: Request{GPUMemGiB: 4}, want: []string{"5:4 GiB"}},
		{name: "no GPUs at all", inv: nil, req: Request{GPUMemGiB: 3}, err: ErrNoFit, msg: "0/0 GPUs fit 3 GiB: no GPUs"},
		{name: "odd bytes shown to one decimal", inv: gpus(1, 8), reserved: []Reservation{{Replica: "a", GPU: 0, MemoryBytes: 5*GiB + GiB/2}},
			req: Request{GPUMemGiB: 3}, err: ErrNoFit, msg: "0/1 GPUs fit 3 GiB: GPU 0 has 2.5 GiB free of 8 GiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Replica, tt.req.Revision = "new", "rev-new"
			p, err := Place(tt.inv, tt.reserved, tt.req)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				if tt.msg != "" && err.Error() != tt.msg {
					t.Errorf("message:\n got %s\nwant %s", err, tt.msg)
				}
				if errors.Is(tt.err, ErrNoFit) {
					var nf *NoFit
					if !errors.As(err, &nf) || len(nf.GPUs) != len(tt.inv) {
						t.Errorf("want a *NoFit over %d GPUs, got %#v", len(tt.inv), err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := on(p); !slices.Equal(got, tt.want) {
				t.Errorf("placed on %v, want %v", got, tt.want)
			}
			for _, r := range p.Reservations {
				if r.Replica != "new" || r.Revision != "rev-new" {
					t.Errorf("reservation %+v not under the request's names", r)
				}
				if r.Whole && r.MemoryBytes != tt.inv[position(mustStates(t, tt.inv), r.GPU)].MemoryBytes {
					t.Errorf("whole reservation %+v does not hold the device's memory", r)
				}
			}
		})
	}
}

func mustStates(t *testing.T, inv []GPU) []state {
	st, err := states(inv, nil)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestPlaceDeterministic places on the same state with its reservations in many orders.
func TestPlaceDeterministic(t *testing.T) {
	inv := gpus(8, 80)
	r := rand.New(rand.NewPCG(1, 2))
	var reserved []Reservation
	for i := range 200 {
		reserved = append(reserved, share(fmt.Sprint("r", i), r.IntN(8), int64(1+r.IntN(2))))
	}
	for _, req := range []Request{{GPUMemGiB: 7}, {GPUMemGiB: 12, GPUCount: 3}, {WholeGPUs: 1}} {
		first, err1 := Place(inv, reserved, req)
		for range 20 {
			shuffled := slices.Clone(reserved)
			r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			p, err := Place(inv, shuffled, req)
			if fmt.Sprint(err) != fmt.Sprint(err1) || !slices.Equal(on(p), on(first)) {
				t.Fatalf("%v: %v %v, then %v %v", req, on(first), err1, on(p), err)
			}
		}
	}
}

// TestPlaceFillsUp keeps placing 3 GiB replicas until nothing fits: every GPU ends full to
// within a share, and no GPU ever holds more than its capacity.
func TestPlaceFillsUp(t *testing.T) {
	inv := gpus(3, 10)
	var reserved []Reservation
	for i := 0; ; i++ {
		p, err := Place(inv, reserved, Request{Replica: fmt.Sprint("r", i), GPUMemGiB: 3})
		if err != nil {
			if !errors.Is(err, ErrNoFit) {
				t.Fatal(err)
			}
			break
		}
		reserved = append(reserved, p.Reservations...)
	}
	if len(reserved) != 9 {
		t.Errorf("placed %d replicas of 3 GiB on 3 × 10 GiB, want 9", len(reserved))
	}
	// Bin-packing fills GPU 0 first, then 1, then 2.
	for i, r := range reserved {
		if r.GPU != i/3 {
			t.Errorf("replica %d on GPU %d, want %d", i, r.GPU, i/3)
		}
	}
}
