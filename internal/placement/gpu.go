package placement

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Memory units. aliyun.com/gpu-mem counts GiB; HAMi and MPS limits are written in MiB.
const (
	MiB int64 = 1 << 20
	GiB int64 = 1 << 30
)

// Sentinel errors. Every error this package returns matches one of them with errors.Is.
var (
	// ErrInvalidRequest: the request or inventory cannot be placed by any state of the
	// machine (negative amounts, gpu-mem not divisible by gpu-count, both shares and whole
	// devices, duplicate GPU indices).
	ErrInvalidRequest = errors.New("placement: invalid request")
	// ErrNoFit: no GPU (or not enough GPUs) has the memory or the idle devices asked for;
	// a *NoFit says how much each GPU has free.
	ErrNoFit = errors.New("placement: no GPU fits")
	// ErrNoVictims: no set of idle replicas frees enough for a hand-off; a *NoVictims
	// says which replicas are busy, pinned or protected.
	ErrNoVictims = errors.New("placement: no hand-off frees enough GPU memory")
	// ErrNoUnit: no ResourcePolicy unit may take the replica now; an *Unschedulable lists
	// why for each unit and when to ask again.
	ErrNoUnit = errors.New("placement: no unit takes the replica")
	// ErrMissingLabel: the replica lacks a label the policy's matchLabelKeys groups by;
	// ACK rejects such a pod, and so does ChooseUnit.
	ErrMissingLabel = errors.New("placement: replica lacks a matchLabelKeys label")
)

// GPU is one device of the machine's inventory.
type GPU struct {
	Index int    // nvidia-smi's index
	UUID  string // "GPU-…"; empty for a declared inventory
	Name  string // model, for display
	// MemoryBytes is the device's memory. Shares are counted in whole GiB of it, as
	// gpushare's device plugin registers one unit per GiB (79 on an 80 GB H100).
	MemoryBytes int64
	// Declared: the inventory came from `infera up --gpus`, not from the driver.
	Declared bool
}

// Reservation is what one replica holds on one GPU.
type Reservation struct {
	Replica     string
	Revision    string
	GPU         int   // GPU.Index
	MemoryBytes int64 // the share; the device's memory when Whole
	Whole       bool  // nvidia.com/gpu: the device is the replica's alone
}

// Request is what one replica asks for, in the units of its container's limits.
type Request struct {
	Replica  string
	Revision string
	// GPUMemGiB is aliyun.com/gpu-mem: GiB of GPU memory, in total.
	GPUMemGiB int
	// GPUCount is aliyun.com/gpu-count: spread GPUMemGiB evenly over that many distinct
	// GPUs (ACK's multi-GPU sharing: N GiB over M GPUs is N/M GiB on each, N/M an
	// integer). 0 or 1: one GPU.
	GPUCount int
	// WholeGPUs is nvidia.com/gpu: that many devices, exclusively.
	WholeGPUs int
}

// gpus is how many GPUs the request spans and share the memory asked of each (0 for whole).
func (r Request) gpus() (n int, share int64) {
	if r.WholeGPUs > 0 {
		return r.WholeGPUs, 0
	}
	n = max(1, r.GPUCount)
	return n, int64(r.GPUMemGiB/n) * GiB
}

// Empty reports whether the request asks for no GPU at all.
func (r Request) Empty() bool { return r.GPUMemGiB == 0 && r.WholeGPUs == 0 }

func (r Request) validate() error {
	switch {
	case r.GPUMemGiB < 0 || r.GPUCount < 0 || r.WholeGPUs < 0:
		return fmt.Errorf("%w: negative GPU amounts (gpu-mem %d, gpu-count %d, nvidia.com/gpu %d)",
			ErrInvalidRequest, r.GPUMemGiB, r.GPUCount, r.WholeGPUs)
	case r.GPUMemGiB > 0 && r.WholeGPUs > 0:
		return fmt.Errorf("%w: aliyun.com/gpu-mem and nvidia.com/gpu together: a replica takes GPU shares or whole GPUs, not both",
			ErrInvalidRequest)
	case r.GPUCount > 1 && r.GPUMemGiB == 0:
		return fmt.Errorf("%w: aliyun.com/gpu-count %d without aliyun.com/gpu-mem", ErrInvalidRequest, r.GPUCount)
	case r.GPUCount > 1 && r.GPUMemGiB%r.GPUCount != 0:
		return fmt.Errorf("%w: aliyun.com/gpu-mem %d is not divisible by aliyun.com/gpu-count %d (ACK gives each GPU an equal whole number of GiB)",
			ErrInvalidRequest, r.GPUMemGiB, r.GPUCount)
	}
	return nil
}

func (r Request) String() string {
	n, share := r.gpus()
	switch {
	case r.WholeGPUs == 1:
		return "1 whole GPU"
	case r.WholeGPUs > 1:
		return fmt.Sprintf("%d whole GPUs", n)
	case n > 1:
		return fmt.Sprintf("%s on each of %d GPUs", gib(share), n)
	}
	return gib(share)
}

// Placement is where a request landed: one reservation per GPU, in GPU index order. The
// zero Placement (no reservations) is the placement of a request for no GPU.
type Placement struct {
	Replica      string
	Revision     string
	Reservations []Reservation
}

// GPUStatus is one GPU as a placement saw it.
type GPUStatus struct {
	Index int
	Free  int64  // share capacity not reserved; 0 when held whole
	Total int64  // share capacity: the device's memory in whole GiB
	Whole string // replica holding the device whole, if any
	Held  int    // reservations on the device
}

func (s GPUStatus) String() string {
	if s.Whole != "" {
		return fmt.Sprintf("GPU %d is held whole by %s", s.Index, s.Whole)
	}
	return fmt.Sprintf("GPU %d has %s free of %s", s.Index, gib(s.Free), gib(s.Total))
}

// NoFit is Place's error: the request and each GPU's free memory, worded like the
// gpushare scheduler extender's "Insufficient GPU Memory in one device" with the numbers.
type NoFit struct {
	Request Request
	Fit     int // GPUs that could take a share (or are idle, for whole GPUs)
	GPUs    []GPUStatus
}

func (e *NoFit) Error() string {
	var b strings.Builder
	n, share := e.Request.gpus()
	switch {
	case e.Request.WholeGPUs > 0:
		fmt.Fprintf(&b, "%d/%d GPUs idle, %s needed", e.Fit, len(e.GPUs), e.Request)
	case n > 1:
		fmt.Fprintf(&b, "%d/%d GPUs fit %s, %d needed", e.Fit, len(e.GPUs), gib(share), n)
	default:
		fmt.Fprintf(&b, "%d/%d GPUs fit %s", e.Fit, len(e.GPUs), gib(share))
	}
	if len(e.GPUs) == 0 {
		b.WriteString(": no GPUs")
	}
	for i, g := range e.GPUs {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString(", ")
		}
		b.WriteString(g.String())
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrNoFit) hold.
func (e *NoFit) Unwrap() error { return ErrNoFit }

// Place puts req on the inventory given what is reserved, by ACK gpushare's rules:
//   - aliyun.com/gpu-mem goes to the GPU with the least free memory that still fits
//     (bin-packing; ties to the lowest index), never to a GPU held whole;
//   - with aliyun.com/gpu-count N, gpu-mem/N goes on each of N distinct GPUs, picked by
//     the same rule;
//   - nvidia.com/gpu takes idle devices (no reservation at all), lowest index first.
//
// Reservations on GPUs missing from the inventory are ignored. A request for no GPU gets
// an empty Placement. When nothing fits, the error is a *NoFit.
func Place(inv []GPU, reserved []Reservation, req Request) (Placement, error) {
	p := Placement{Replica: req.Replica, Revision: req.Revision}
	if err := req.validate(); err != nil {
		return p, err
	}
	if req.Empty() {
		return p, nil
	}
	st, err := states(inv, reserved)
	if err != nil {
		return p, err
	}
	picked, fit := pick(st, req)
	if picked == nil {
		return p, noFit(st, req, fit)
	}
	p.Reservations = make([]Reservation, len(picked))
	_, share := req.gpus()
	for i, s := range picked {
		r := Reservation{Replica: req.Replica, Revision: req.Revision, GPU: s.Index, MemoryBytes: share}
		if req.WholeGPUs > 0 {
			r.MemoryBytes, r.Whole = s.memory, true
		}
		p.Reservations[i] = r
	}
	return p, nil
}

// state is one GPU with what is reserved on it.
type state struct {
	GPUStatus
	memory int64 // the device's MemoryBytes
}

// states tallies reservations per GPU, in inventory order.
func states(inv []GPU, reserved []Reservation) ([]state, error) {
	st := make([]state, len(inv))
	for i, g := range inv {
		for _, h := range inv[:i] {
			if h.Index == g.Index {
				return nil, fmt.Errorf("%w: GPU index %d listed twice in the inventory", ErrInvalidRequest, g.Index)
			}
		}
		c := max(0, g.MemoryBytes/GiB*GiB)
		st[i] = state{GPUStatus: GPUStatus{Index: g.Index, Free: c, Total: c}, memory: g.MemoryBytes}
	}
	for _, r := range reserved {
		i := position(st, r.GPU)
		if i < 0 {
			continue
		}
		s := &st[i]
		s.Held++
		if r.Whole {
			s.Whole = r.Replica
		} else {
			s.Free -= r.MemoryBytes
		}
	}
	for i := range st {
		if st[i].Whole != "" || st[i].Free < 0 {
			st[i].Free = 0
		}
	}
	return st, nil
}

// position finds GPU index idx in st: directly when the inventory is numbered 0..n-1 in
// order (the usual case), else by scanning.
func position(st []state, idx int) int {
	if idx >= 0 && idx < len(st) && st[idx].Index == idx {
		return idx
	}
	for i := range st {
		if st[i].Index == idx {
			return i
		}
	}
	return -1
}

// pick chooses the GPUs for req, in index order; nil when too few fit. fit is how many
// GPUs could take the request's share (or are idle).
func pick(st []state, req Request) (picked []*state, fit int) {
	n, share := req.gpus()
	var ok []*state
	for i := range st {
		s := &st[i]
		if req.WholeGPUs > 0 {
			if s.Held == 0 {
				ok = append(ok, s)
			}
		} else if s.Whole == "" && s.Free >= share {
			ok = append(ok, s)
		}
	}
	fit = len(ok)
	if fit < n {
		return nil, fit
	}
	if req.WholeGPUs == 0 {
		slices.SortFunc(ok, func(a, b *state) int { return cmp.Or(cmp.Compare(a.Free, b.Free), cmp.Compare(a.Index, b.Index)) })
	} else {
		slices.SortFunc(ok, func(a, b *state) int { return cmp.Compare(a.Index, b.Index) })
	}
	ok = ok[:n]
	slices.SortFunc(ok, func(a, b *state) int { return cmp.Compare(a.Index, b.Index) })
	return ok, fit
}

func noFit(st []state, req Request, fit int) *NoFit {
	e := &NoFit{Request: req, Fit: fit, GPUs: make([]GPUStatus, len(st))}
	for i, s := range st {
		e.GPUs[i] = s.GPUStatus
	}
	slices.SortFunc(e.GPUs, func(a, b GPUStatus) int { return cmp.Compare(a.Index, b.Index) })
	return e
}

// gib formats bytes as GiB: whole numbers plainly, others to one decimal.
func gib(b int64) string {
	if b%GiB == 0 {
		return strconv.FormatInt(b/GiB, 10) + " GiB"
	}
	return strconv.FormatFloat(float64(b)/float64(GiB), 'f', 1, 64) + " GiB"
}
