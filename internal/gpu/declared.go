package gpu

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Bounds on a declared device's memory. Below the floor the likeliest story is a missing
// suffix ("80" is 80 bytes); above the ceiling a quantity no longer fits what a GPU holds
// (and resource.Quantity starts to saturate int64).
const (
	minDeclared int64 = 1 << 20 // 1Mi
	maxDeclared int64 = 1 << 50 // 1Pi
)

// SpecError is one problem with a --gpus value. Entry is the 1-based position of the bad
// entry in the comma-separated list, or 0 when the problem is with the value as a whole.
type SpecError struct {
	Entry int
	Value string
	Err   error
}

func (e *SpecError) Error() string {
	if e.Entry == 0 {
		return fmt.Sprintf("--gpus %q: %v", e.Value, e.Err)
	}
	return fmt.Sprintf("--gpus: entry %d %q: %v", e.Entry, e.Value, e.Err)
}

func (e *SpecError) Unwrap() error { return e.Err }

// ParseDeclared reads a declared inventory, as in `infera up --gpus 80Gi,80Gi`: one
// Kubernetes quantity of memory per device ("80Gi", "81920Mi", "40G"), device i being the
// i-th entry, named and identified "declared-i". "none" is no GPUs. Every bad entry is
// reported, each as a *SpecError, joined.
func ParseDeclared(spec string) (Inventory, error) {
	spec = strings.TrimSpace(spec)
	switch {
	case strings.EqualFold(spec, "none"):
		return none{}, nil
	case spec == "":
		return nil, &SpecError{Value: spec, Err: errors.New(`empty: give one memory size per GPU (80Gi,80Gi), "none" or "auto"`)}
	}
	var (
		devs []Device
		errs []error
	)
	for i, entry := range strings.Split(spec, ",") {
		entry = strings.TrimSpace(entry)
		bytes, err := parseMemory(entry)
		if err != nil {
			errs = append(errs, &SpecError{Entry: i + 1, Value: entry, Err: err})
			continue
		}
		id := "declared-" + strconv.Itoa(i)
		devs = append(devs, Device{Index: i, UUID: id, Name: id, MemoryTotal: bytes, Declared: true})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return declared{devices: devs}, nil
}

// parseMemory reads one entry: a whole number of bytes between minDeclared and maxDeclared.
func parseMemory(entry string) (int64, error) {
	if entry == "" {
		return 0, errors.New("empty: give a memory size such as 80Gi")
	}
	q, err := resource.ParseQuantity(entry)
	if err != nil {
		return 0, err
	}
	if q.Sign() <= 0 {
		return 0, errors.New("memory must be positive")
	}
	if q.Cmp(*resource.NewQuantity(maxDeclared, resource.BinarySI)) > 0 {
		return 0, errors.New("more than 1Pi: not a GPU's memory")
	}
	v := q.Value() // rounded up to a whole byte
	if q.Cmp(*resource.NewQuantity(v, resource.BinarySI)) != 0 {
		return 0, errors.New("not a whole number of bytes")
	}
	if v < minDeclared {
		if _, err := strconv.ParseInt(entry, 10, 64); err == nil {
			return 0, fmt.Errorf("%d bytes, less than 1Mi: did you mean %sGi?", v, entry)
		}
		return 0, errors.New("less than 1Mi: not a GPU's memory")
	}
	return v, nil
}

// declared is an inventory the operator declared: totals only, nothing measured.
type declared struct{ devices []Device }

func (d declared) Devices() ([]Device, error)            { return slices.Clone(d.devices), nil }
func (declared) ProcessMemory() ([]ProcessMemory, error) { return nil, nil }
func (declared) Source() string                          { return SourceDeclared }
func (declared) Close() error                            { return nil }
