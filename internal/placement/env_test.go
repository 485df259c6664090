package placement

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestEnv(t *testing.T) {
	inv := gpus(4, 80)
	inv[3].MemoryBytes = 40 * GiB
	declared := []GPU{{Index: 0, MemoryBytes: 80 * GiB, Declared: true}, {Index: 1, MemoryBytes: 80 * GiB, Declared: true}}
	one := Placement{Replica: "r", Reservations: []Reservation{share("r", 1, 3)}}
	spread := Placement{Replica: "r", Reservations: []Reservation{share("r", 1, 4), share("r", 3, 4)}}
	wholes := Placement{Replica: "r", Reservations: []Reservation{whole("r", 0, 80), whole("r", 2, 80)}}
	tests := []struct {
		name    string
		p       Placement
		inv     []GPU
		process bool
		enf     Enforcer
		want    []string
	}{
		{name: "container share", p: one, inv: inv, want: []string{
			"NVIDIA_VISIBLE_DEVICES=GPU-1", "ALIYUN_COM_GPU_MEM_IDX=1", "ALIYUN_COM_GPU_MEM_POD=3",
			"ALIYUN_COM_GPU_MEM_CONTAINER=3", "ALIYUN_COM_GPU_MEM_DEV=80"}},
		{name: "process share by UUID", p: one, inv: inv, process: true, want: []string{
			"NVIDIA_VISIBLE_DEVICES=GPU-1", "ALIYUN_COM_GPU_MEM_IDX=1", "ALIYUN_COM_GPU_MEM_POD=3",
			"ALIYUN_COM_GPU_MEM_CONTAINER=3", "ALIYUN_COM_GPU_MEM_DEV=80", "CUDA_VISIBLE_DEVICES=GPU-1"}},
		{name: "process share on a declared GPU: index in PCI order", p: one, inv: declared, process: true, want: []string{
			"NVIDIA_VISIBLE_DEVICES=1", "ALIYUN_COM_GPU_MEM_IDX=1", "ALIYUN_COM_GPU_MEM_POD=3",
			"ALIYUN_COM_GPU_MEM_CONTAINER=3", "ALIYUN_COM_GPU_MEM_DEV=80", "CUDA_VISIBLE_DEVICES=1",
			"CUDA_DEVICE_ORDER=PCI_BUS_ID"}},
		{name: "spread over two GPUs: total, smallest device", p: spread, inv: inv, want: []string{
			"NVIDIA_VISIBLE_DEVICES=GPU-1,GPU-3", "ALIYUN_COM_GPU_MEM_IDX=1,3", "ALIYUN_COM_GPU_MEM_POD=8",
			"ALIYUN_COM_GPU_MEM_CONTAINER=8", "ALIYUN_COM_GPU_MEM_DEV=40"}},
		{name: "HAMi limits by visible ordinal", p: spread, inv: inv, enf: EnforceHAMi, want: []string{
			"NVIDIA_VISIBLE_DEVICES=GPU-1,GPU-3", "ALIYUN_COM_GPU_MEM_IDX=1,3", "ALIYUN_COM_GPU_MEM_POD=8",
			"ALIYUN_COM_GPU_MEM_CONTAINER=8", "ALIYUN_COM_GPU_MEM_DEV=40",
			"CUDA_DEVICE_MEMORY_LIMIT_0=4096m", "CUDA_DEVICE_MEMORY_LIMIT_1=4096m"}},
		{name: "MPS pinned limits", p: one, inv: inv, process: true, enf: EnforceMPS, want: []string{
			"NVIDIA_VISIBLE_DEVICES=GPU-1", "ALIYUN_COM_GPU_MEM_IDX=1", "ALIYUN_COM_GPU_MEM_POD=3",
			"ALIYUN_COM_GPU_MEM_CONTAINER=3", "ALIYUN_COM_GPU_MEM_DEV=80", "CUDA_VISIBLE_DEVICES=GPU-1",
			"CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=3072M"}},
		{name: "MPS over two GPUs", p: spread, inv: inv, enf: EnforceMPS, want: []string{
			"NVIDIA_VISIBLE_DEVICES=GPU-1,GPU-3", "ALIYUN_COM_GPU_MEM_IDX=1,3", "ALIYUN_COM_GPU_MEM_POD=8",
			"ALIYUN_COM_GPU_MEM_CONTAINER=8", "ALIYUN_COM_GPU_MEM_DEV=40",
			"CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=4096M,1=4096M"}},
		{name: "whole GPUs: devices only, no share, no limit", p: wholes, inv: inv, process: true, enf: EnforceHAMi, want: []string{
			"NVIDIA_VISIBLE_DEVICES=GPU-0,GPU-2", "CUDA_VISIBLE_DEVICES=GPU-0,GPU-2"}},
		{name: "whole GPUs in a container", p: wholes, inv: inv, want: []string{"NVIDIA_VISIBLE_DEVICES=GPU-0,GPU-2"}},
		{name: "no GPU, no env", p: Placement{Replica: "r"}, inv: inv, process: true, enf: EnforceMPS, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Env(tt.p, tt.inv, tt.process, tt.enf)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Env:\n got %s\nwant %s", strings.Join(got, " "), strings.Join(tt.want, " "))
			}
		})
	}
}

// TestEnvOfPlace checks Env on what Place returns for the article's 3 GiB replica.
func TestEnvOfPlace(t *testing.T) {
	inv := gpus(2, 16)
	p, err := Place(inv, []Reservation{share("a", 1, 10)}, Request{Replica: "helloworld-gpu-00001-1", GPUMemGiB: 3})
	if err != nil {
		t.Fatal(err)
	}
	got := Env(p, inv, false, EnforceNone)
	want := []string{"NVIDIA_VISIBLE_DEVICES=GPU-1", "ALIYUN_COM_GPU_MEM_IDX=1", "ALIYUN_COM_GPU_MEM_POD=3",
		"ALIYUN_COM_GPU_MEM_CONTAINER=3", "ALIYUN_COM_GPU_MEM_DEV=16"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if d := Devices(p, inv); !slices.Equal(d, []string{"GPU-1"}) {
		t.Errorf("Devices = %v", d)
	}
}

func TestParseEnforcer(t *testing.T) {
	for in, want := range map[string]Enforcer{"": EnforceNone, "none": EnforceNone, "hami": EnforceHAMi, " HAMi ": EnforceHAMi, "mps": EnforceMPS} {
		if got, err := ParseEnforcer(in); err != nil || got != want {
			t.Errorf("ParseEnforcer(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseEnforcer("cgpu"); !errors.Is(err, ErrInvalidRequest) {
		t.Errorf("ParseEnforcer(cgpu) = %v, want ErrInvalidRequest", err)
	}
}
