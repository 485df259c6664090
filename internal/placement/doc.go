// Package placement is infera's placement policy: which GPUs a replica gets and what env
// says so, which idle replicas hand their GPU memory over to a cold one, and which unit of
// a ResourcePolicy a replica goes to and leaves from. It is pure: it reads no clock (now
// and pendingSince are arguments), does no I/O and starts no goroutine; the supervisor and
// the runtimes carry out what it decides. Every function is deterministic: the same
// inputs, in any order of reservations, give the same answer.
//
// # GPU placement (ACK gpushare)
//
// Place follows the gpushare scheduler extender (AliyunContainerService/
// gpushare-scheduler-extender, pkg/cache/nodeinfo.go allocateGPUID): aliyun.com/gpu-mem is
// GiB, and goes to the GPU with the least free memory that still fits, ties to the lowest
// index, so small replicas pack onto busy GPUs and leave whole ones for big ones. A GPU's
// share capacity is its memory in whole GiB, as gpushare's device plugin registers one
// unit per GiB (pkg/gpu/nvidia/nvidia.go), so an 80 GB H100 holds 79. When nothing fits,
// the extender says only "Insufficient GPU Memory in one device"; a *NoFit adds the
// numbers, e.g. "0/2 GPUs fit 60 GiB: GPU 0 has 20 GiB free of 80 GiB, GPU 1 has 50 GiB
// free of 80 GiB".
//
// aliyun.com/gpu-count spreads the request over that many GPUs as ACK's multi-GPU sharing
// does ("Use multi-GPU sharing" in ACK's documentation): N GiB over M GPUs is N/M GiB on
// each of M distinct GPUs, N/M must be a whole number (anything else is
// ErrInvalidRequest). ACK reads the count from a pod label; the caller passes it from
// wherever the manifest put it. The M GPUs are picked by the same least-free-that-fits
// rule. nvidia.com/gpu takes whole, idle devices (no reservation of any kind), lowest
// index first; a GPU held whole takes no shares. A replica asks for shares or whole
// GPUs, never both.
//
// Env is the env gpushare's device plugin gives a container (pkg/gpu/nvidia/const.go and
// allocate.go): NVIDIA_VISIBLE_DEVICES with the device's UUID (the index when the
// inventory was declared and has none), ALIYUN_COM_GPU_MEM_IDX with the GPU index,
// ALIYUN_COM_GPU_MEM_POD and ALIYUN_COM_GPU_MEM_CONTAINER with the GiB reserved (equal:
// a replica is one container), ALIYUN_COM_GPU_MEM_DEV with the device's GiB. ACK's
// "GPU sharing without memory isolation" page is why the last two matter: applications
// size themselves by CONTAINER/DEV. Spread over several GPUs, IDX and the device lists
// are comma-separated and DEV is the smallest device's. A process also gets
// CUDA_VISIBLE_DEVICES with the same devices, plus CUDA_DEVICE_ORDER=PCI_BUS_ID when it
// names any by index, since CUDA's default order (FASTEST_FIRST, per the CUDA
// Programming Guide's "CUDA Environment Variables") need not be nvidia-smi's. A
// container needs neither: the NVIDIA runtime mounts only the listed devices and CUDA
// inside numbers them from 0.
//
// gpushare only schedules; it does not stop a replica from using more. Env can add an
// enforcer's limit for each visible device, by its ordinal in the placement (0 first):
// HAMi-core's CUDA_DEVICE_MEMORY_LIMIT_<i>=<MiB>m (Project-HAMi/HAMi-core README and
// src/multiprocess/multiprocess_memory_limit.c, which reads the g/m/k suffixes), or the
// MPS client's CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=<i>=<MiB>M,... (NVIDIA's MPS
// documentation, "Appendix: Environment Variables" and the control daemon's
// set_default_device_pinned_mem_limit, whose value is an integer with G or M). The
// mechanism supplies what else the enforcer needs (HAMi's LD_PRELOAD, the MPS pipe
// directory).
//
// # GPU hand-off
//
// When a cold replica does not fit, Victims picks idle replicas to stop: no request in
// flight, above their revision's min-scale, not annotated infera.dev/gpu-evictable:
// "false", of another revision. It wants the fewest evictions, then the least recently
// used, and it touches only as many GPUs as the request spans: per GPU the smallest set
// of eligible holders that frees enough (the earliest in LRU order among sets of that
// size), then the GPUs with the smallest sets, then with the oldest newest victim, then
// the lowest index. What a candidate frees is read from the reservations under its name,
// so a replica spread over GPUs frees all of them. If no set exists, a *NoVictims names
// the replicas that are busy, at min-scale, protected, of the same revision or unknown.
//
// # ResourcePolicy units (ACK custom elastic resource priority scheduling)
//
// A ResourcePolicy (scheduling.alibabacloud.com/v1alpha1; ACK's "Custom elastic resource
// priority scheduling" page) lists units, filled in order up to each unit's max and
// emptied in reverse. On one machine a unit's resource type picks a kind of Pool and its
// nodeSelector the pools whose labels match: ecs units are pools of capacity infera owns
// (a set of GPUs, optional cpu and memory bounds); the eci unit is the elastic pool that
// takes bursts. acs draws on eci pools and the deprecated elastic on ecs pools.
// ChooseUnit implements, as ACK defines them: max and maxResources (cpu, memory,
// aliyun.com/gpu-mem, nvidia.com/gpu; ExceedMax's "reached" is count >= max or used plus
// asked > maxResources); whenTryNextUnits.policy ExceedMax, LackResourceOrExceedMax (the
// default), TimeoutOrExceedMax with its timeout (15 minutes unset) measured from
// pendingSince and the wait-for-ecs-scaling pod label, LackResourceAndNoTerminating (also
// as the CRD spells it, LackResourceAndNoterminating); the CRD's undocumented Timeout
// acts as TimeoutOrExceedMax. ignorePreviousPod (default false), ignoreTerminatingPod
// (default true) and matchLabelKeys (max per group of equal label values; a replica
// missing a key is rejected) decide which replicas a unit's max counts. ACK's preemption
// becomes the GPU hand-off: preemptPolicy BeforeNextUnit hands off inside each unit
// before moving on, AfterAllUnits (the default) only when no unit took the replica.
// ScaleInOrder is the reverse: last unit first, newest first within a unit, exactly,
// where ACK promises best effort.
//
// Accepted and inert on one machine: strategy (prefer is the only one), spotInstance and
// scaleInWeight (no spot market, no weights to honor), consumerRef and the selector (the
// caller decides which replicas a policy covers), podLabels and podAnnotations for
// counting (a replica records its unit; Choice returns them to put on the replica),
// maxResources of other resources, and autoscaling: nothing adds capacity while a replica
// waits in an ecs unit, so it waits for replicas to leave.
package placement
