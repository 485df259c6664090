// Package gpu is infera's GPU inventory: which GPUs this machine has, how much memory each
// holds, and, where it can be measured, how much of it each process uses.
//
// # Sources
//
// An [Inventory] comes from one of three sources, named by its Source method:
//
//   - "nvml": measured. NVIDIA's management library (libnvidia-ml.so.1, the library
//     nvidia-smi uses) is loaded at run time through github.com/NVIDIA/go-nvml. Every call to
//     Devices or ProcessMemory asks the driver afresh: total and used memory per device, and
//     the memory each compute or graphics process holds on it.
//   - "declared": told. `infera up --gpus 80Gi,80Gi` declares one device per entry, with the
//     memory the entry names. Nothing is measured: MemoryUsed is 0, ProcessMemory is empty,
//     and every Device has Declared set, so a view shows a declared figure as declared and
//     never as a measurement. This is how infera places GPU replicas on a machine whose
//     driver it cannot reach (a laptop rehearsing a GPU fleet, a test, a container without
//     the NVIDIA runtime).
//   - "none": no GPUs. Either asked for (`--gpus none`) or the fallback of the default
//     (`--gpus auto` or no flag) when NVML is not there.
//
// [Open] turns the --gpus flag into an Inventory:
//
//	"" or "auto" ──NVML loads──▶ nvml
//	     │
//	     └──no library / Init fails──▶ none  (one log line says why, and how to declare)
//	"none" ─────────────────────────▶ none
//	"80Gi,80Gi" ──[ParseDeclared]───▶ declared
//
// # cgo
//
// go-nvml is a cgo package, so the NVML source exists only in binaries built with cgo. infera
// is also built with CGO_ENABLED=0 (the static binary put in container images); there "auto"
// always gives "none", with the reason "built without cgo: NVML unavailable", and a declared
// inventory works as anywhere else.
//
// # What NVML figures mean
//
// Device.Index is NVML's index, which is PCI bus order; CUDA numbers devices fastest-first
// unless CUDA_DEVICE_ORDER=PCI_BUS_ID, so hand devices to replicas by UUID. ProcessMemory
// PIDs are as the driver sees them, that is, in the host's PID namespace, whether the
// process runs directly or in a container. A process listed both as compute and as graphics
// (nvidia-smi's "C+G") is counted once per GPU or MIG instance; one present in several MIG
// instances of a device is summed. A process whose usage the driver does not report (it
// says "not available", as it does without the permission to look) is left out rather than
// shown as using nothing.
package gpu
