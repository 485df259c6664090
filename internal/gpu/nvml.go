//go:build cgo

// go-nvml is a cgo package (it declares NVML's C API and dlopens the library), so this
// file exists only where cgo does; nocgo.go stands in for it elsewhere.

package gpu

import (
	"cmp"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// openAuto is Open("auto"): NVML from libnvidia-ml.so.1, or no GPUs.
func openAuto(log *slog.Logger) Inventory {
	return openNVML(nvml.New(), log)
}

// openNVML initialises lib and returns its inventory, or, when Init fails, no GPUs, saying
// why once in log.
func openNVML(lib nvml.Interface, log *slog.Logger) Inventory {
	switch ret := lib.Init(); ret {
	case nvml.SUCCESS:
		return &nvmlInventory{lib: lib}
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		log.Info("no NVIDIA library: " + declareHint)
		return none{}
	default:
		// The library is there but the driver does not answer: worth an operator's look.
		log.Warn("NVML init failed: "+declareHint, "err", ret)
		return none{}
	}
}

// nvmlInventory measures through an initialised NVML. Queries hold mu for reading and
// Close holds it for writing, so Shutdown never runs under a query.
type nvmlInventory struct {
	lib    nvml.Interface
	mu     sync.RWMutex
	closed bool
}

func (n *nvmlInventory) Source() string { return SourceNVML }

func (n *nvmlInventory) Devices() ([]Device, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.closed {
		return nil, ErrClosed
	}
	handles, err := n.handles()
	if err != nil {
		return nil, err
	}
	devs := make([]Device, 0, len(handles))
	for i, h := range handles {
		uuid, ret := h.GetUUID()
		if ret != nvml.SUCCESS {
			return nil, deviceErr(i, "", "uuid", ret)
		}
		name, ret := h.GetName()
		if ret != nvml.SUCCESS {
			return nil, deviceErr(i, uuid, "name", ret)
		}
		mem, ret := h.GetMemoryInfo()
		if ret != nvml.SUCCESS {
			return nil, deviceErr(i, uuid, "memory info", ret)
		}
		devs = append(devs, Device{
			Index:       i,
			UUID:        uuid,
			Name:        name,
			MemoryTotal: clampInt64(mem.Total),
			MemoryUsed:  clampInt64(mem.Used),
		})
	}
	return devs, nil
}

func (n *nvmlInventory) ProcessMemory() ([]ProcessMemory, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.closed {
		return nil, ErrClosed
	}
	handles, err := n.handles()
	if err != nil {
		return nil, err
	}
	var out []ProcessMemory
	for i, h := range handles {
		compute, ret := h.GetComputeRunningProcesses()
		if ret != nvml.SUCCESS && ret != nvml.ERROR_NOT_SUPPORTED {
			return nil, deviceErr(i, "", "compute processes", ret)
		}
		graphics, ret := h.GetGraphicsRunningProcesses()
		if ret != nvml.SUCCESS && ret != nvml.ERROR_NOT_SUPPORTED {
			return nil, deviceErr(i, "", "graphics processes", ret)
		}
		out = append(out, sumByPID(i, compute, graphics)...)
	}
	return out, nil
}

// instance is where on a device a process's memory is counted: the device itself, or one
// MIG instance of it.
type instance struct{ pid, gi, ci uint32 }

// sumByPID folds a device's compute and graphics process lists into one entry per PID. A
// process in both lists (C+G) holds one allocation, reported twice: count it once. A
// process in several MIG instances holds memory in each: sum them. Sizes the driver does
// not report are left out.
func sumByPID(device int, lists ...[]nvml.ProcessInfo) []ProcessMemory {
	perInstance := map[instance]uint64{}
	for _, list := range lists {
		for _, p := range list {
			if p.UsedGpuMemory == math.MaxUint64 { // NVML_VALUE_NOT_AVAILABLE
				continue
			}
			k := instance{p.Pid, p.GpuInstanceId, p.ComputeInstanceId}
			perInstance[k] = max(perInstance[k], p.UsedGpuMemory)
		}
	}
	perPID := map[uint32]uint64{}
	for k, b := range perInstance {
		perPID[k.pid] += b
	}
	out := make([]ProcessMemory, 0, len(perPID))
	for pid, b := range perPID {
		out = append(out, ProcessMemory{PID: int(pid), Device: device, Bytes: clampInt64(b)})
	}
	slices.SortFunc(out, func(a, b ProcessMemory) int { return cmp.Compare(a.PID, b.PID) })
	return out
}

// handles asks NVML for every device. The caller holds mu.
func (n *nvmlInventory) handles() ([]nvml.Device, error) {
	count, ret := n.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("%w: device count: %w", ErrNVML, ret)
	}
	hs := make([]nvml.Device, count)
	for i := range hs {
		h, ret := n.lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return nil, deviceErr(i, "", "handle", ret)
		}
		hs[i] = h
	}
	return hs, nil
}

// Close shuts NVML down, once, after any query in flight.
func (n *nvmlInventory) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	if ret := n.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("%w: shutdown: %w", ErrNVML, ret)
	}
	return nil
}

// deviceErr names the device (by index, and UUID once known) and the call that failed.
func deviceErr(index int, uuid, op string, ret nvml.Return) error {
	if uuid != "" {
		return fmt.Errorf("%w: device %d (%s): %s: %w", ErrNVML, index, uuid, op, ret)
	}
	return fmt.Errorf("%w: device %d: %s: %w", ErrNVML, index, op, ret)
}

// clampInt64 converts NVML's unsigned byte counts; no GPU comes near 8 EiB, but a garbage
// value must not turn negative.
func clampInt64(v uint64) int64 {
	return int64(min(v, math.MaxInt64))
}
