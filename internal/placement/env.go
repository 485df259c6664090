package placement

import (
	"fmt"
	"strconv"
	"strings"
)

// Enforcer names what, if anything, holds a replica to its GPU share at run time.
// gpushare itself only schedules: without an enforcer a replica sees the whole device and
// is trusted to stay within ALIYUN_COM_GPU_MEM_CONTAINER.
type Enforcer string

// Enforcers.
const (
	// EnforceNone sets no limit: the replica reads its share from the ALIYUN_COM_* env.
	EnforceNone Enforcer = ""
	// EnforceHAMi sets HAMi-core's per-device limit, CUDA_DEVICE_MEMORY_LIMIT_<i>=<N>m,
	// for the libvgpu.so hook the mechanism preloads (LD_PRELOAD is the mechanism's).
	EnforceHAMi Enforcer = "hami"
	// EnforceMPS sets the MPS client's CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=<i>=<N>M,...;
	// it binds only where an MPS control daemon serves the GPUs.
	EnforceMPS Enforcer = "mps"
)

// ParseEnforcer reads an enforcer's name ("", "none", "hami" or "mps").
func ParseEnforcer(s string) (Enforcer, error) {
	switch e := Enforcer(strings.ToLower(strings.TrimSpace(s))); e {
	case EnforceNone, "none":
		return EnforceNone, nil
	case EnforceHAMi, EnforceMPS:
		return e, nil
	}
	return EnforceNone, fmt.Errorf("%w: unknown GPU enforcer %q (want none, hami or mps)", ErrInvalidRequest, s)
}

// Env names of ACK gpushare's device plugin, NVIDIA's container runtime and CUDA.
const (
	EnvNVIDIAVisibleDevices = "NVIDIA_VISIBLE_DEVICES"
	EnvCUDAVisibleDevices   = "CUDA_VISIBLE_DEVICES"
	EnvCUDADeviceOrder      = "CUDA_DEVICE_ORDER"
	EnvGPUMemIdx            = "ALIYUN_COM_GPU_MEM_IDX"
	EnvGPUMemPod            = "ALIYUN_COM_GPU_MEM_POD"
	EnvGPUMemContainer      = "ALIYUN_COM_GPU_MEM_CONTAINER"
	EnvGPUMemDev            = "ALIYUN_COM_GPU_MEM_DEV"
	EnvHAMiMemoryLimit      = "CUDA_DEVICE_MEMORY_LIMIT_" // + visible device ordinal
	EnvMPSPinnedMemLimit    = "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"
)

// Devices lists the placement's devices as NVIDIA's runtime and CUDA name them: the UUID
// where the inventory knows it (what gpushare's device plugin puts in
// NVIDIA_VISIBLE_DEVICES), else the index. The docker runtime passes them as device IDs.
func Devices(p Placement, inv []GPU) []string {
	if len(p.Reservations) == 0 {
		return nil
	}
	ids := make([]string, len(p.Reservations))
	for i, r := range p.Reservations {
		ids[i] = strconv.Itoa(r.GPU)
		if g, ok := find(inv, r.GPU); ok && g.UUID != "" {
			ids[i] = g.UUID
		}
	}
	return ids
}

// Env is the environment a replica gets for its placement, as "KEY=value" in a fixed
// order:
//   - NVIDIA_VISIBLE_DEVICES: Devices, comma-separated;
//   - for shares, what gpushare's device plugin sets: ALIYUN_COM_GPU_MEM_IDX (the GPU
//     indices, comma-separated), ALIYUN_COM_GPU_MEM_POD and ALIYUN_COM_GPU_MEM_CONTAINER
//     (GiB reserved in all; a replica is one container), ALIYUN_COM_GPU_MEM_DEV (GiB of
//     the device, the smallest one when spread over several);
//   - for a process (process true), CUDA_VISIBLE_DEVICES with the same devices, and
//     CUDA_DEVICE_ORDER=PCI_BUS_ID when any is named by index, so CUDA numbers devices
//     as nvidia-smi does. A container gets neither: the NVIDIA runtime exposes only the
//     listed devices and CUDA inside renumbers them from 0;
//   - the enforcer's limits for shares, by visible ordinal (0 is the first device of
//     the placement, in index order, for a container and a process alike).
//
// A placement with no reservations gets no env.
func Env(p Placement, inv []GPU, process bool, e Enforcer) []string {
	if len(p.Reservations) == 0 {
		return nil
	}
	devs := strings.Join(Devices(p, inv), ",")
	env := []string{EnvNVIDIAVisibleDevices + "=" + devs}
	whole := p.Reservations[0].Whole
	if !whole {
		idx := make([]string, len(p.Reservations))
		var total, dev int64
		for i, r := range p.Reservations {
			idx[i] = strconv.Itoa(r.GPU)
			total += r.MemoryBytes
			if g, ok := find(inv, r.GPU); ok && (dev == 0 || g.MemoryBytes < dev) {
				dev = g.MemoryBytes
			}
		}
		gb := strconv.FormatInt(total/GiB, 10)
		env = append(env,
			EnvGPUMemIdx+"="+strings.Join(idx, ","),
			EnvGPUMemPod+"="+gb,
			EnvGPUMemContainer+"="+gb,
			EnvGPUMemDev+"="+strconv.FormatInt(dev/GiB, 10))
	}
	if process {
		env = append(env, EnvCUDAVisibleDevices+"="+devs)
		for _, r := range p.Reservations {
			if g, ok := find(inv, r.GPU); !ok || g.UUID == "" {
				env = append(env, EnvCUDADeviceOrder+"=PCI_BUS_ID")
				break
			}
		}
	}
	if whole {
		return env
	}
	switch e {
	case EnforceHAMi:
		for i, r := range p.Reservations {
			env = append(env, EnvHAMiMemoryLimit+strconv.Itoa(i)+"="+strconv.FormatInt(r.MemoryBytes/MiB, 10)+"m")
		}
	case EnforceMPS:
		lim := make([]string, len(p.Reservations))
		for i, r := range p.Reservations {
			lim[i] = strconv.Itoa(i) + "=" + strconv.FormatInt(r.MemoryBytes/MiB, 10) + "M"
		}
		env = append(env, EnvMPSPinnedMemLimit+"="+strings.Join(lim, ","))
	}
	return env
}

func find(inv []GPU, idx int) (GPU, bool) {
	if idx >= 0 && idx < len(inv) && inv[idx].Index == idx {
		return inv[idx], true
	}
	for _, g := range inv {
		if g.Index == idx {
			return g, true
		}
	}
	return GPU{}, false
}
