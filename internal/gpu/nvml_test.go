//go:build cgo

package gpu

import (
	"errors"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
)

// fakeNVML is a fake NVML library: go-nvml's generated mock.Interface with only the calls
// the inventory makes wired to in-memory devices, so any other call panics. Each device
// is a mock.Device wired the same way.
type fakeNVML struct {
	mock.Interface
	devices []*fakeDevice
	initRet nvml.Return
	// shutdownRet is what Shutdown returns.
	shutdownRet nvml.Return
	// handleRet, when set for an index, makes DeviceGetHandleByIndex fail there.
	handleRet map[int]nvml.Return
}

// fakeDevice is one fake GPU. fail makes a call fail: keys "uuid", "name", "memory",
// "compute", "graphics".
type fakeDevice struct {
	mock.Device
	uuid, name        string
	mem               nvml.Memory
	compute, graphics []nvml.ProcessInfo
	fail              map[string]nvml.Return
}

// newFakeNVML is two 80 GiB H100s; the first runs two processes.
func newFakeNVML() *fakeNVML {
	f := &fakeNVML{
		devices: []*fakeDevice{
			{
				uuid: "GPU-fake-0", name: "NVIDIA H100 80GB HBM3",
				mem: nvml.Memory{Total: uint64(80 * gi), Used: uint64(30 * gi), Free: uint64(50 * gi)},
				compute: []nvml.ProcessInfo{
					{Pid: 4242, UsedGpuMemory: uint64(20 * gi)},
					{Pid: 1717, UsedGpuMemory: uint64(10 * gi)},
				},
			},
			{
				uuid: "GPU-fake-1", name: "NVIDIA H100 80GB HBM3",
				mem: nvml.Memory{Total: uint64(80 * gi), Free: uint64(80 * gi)},
			},
		},
		initRet:     nvml.SUCCESS,
		shutdownRet: nvml.SUCCESS,
		handleRet:   map[int]nvml.Return{},
	}
	f.InitFunc = func() nvml.Return { return f.initRet }
	f.ShutdownFunc = func() nvml.Return { return f.shutdownRet }
	f.DeviceGetCountFunc = func() (int, nvml.Return) { return len(f.devices), nvml.SUCCESS }
	f.DeviceGetHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) {
		if ret, ok := f.handleRet[i]; ok {
			return nil, ret
		}
		if i < 0 || i >= len(f.devices) {
			return nil, nvml.ERROR_INVALID_ARGUMENT
		}
		return f.devices[i], nvml.SUCCESS
	}
	for _, d := range f.devices {
		d.wire()
	}
	return f
}

func (d *fakeDevice) wire() {
	d.GetUUIDFunc = func() (string, nvml.Return) { return d.uuid, d.ret("uuid") }
	d.GetNameFunc = func() (string, nvml.Return) { return d.name, d.ret("name") }
	d.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return d.mem, d.ret("memory") }
	d.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		return d.compute, d.ret("compute")
	}
	d.GetGraphicsRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) {
		return d.graphics, d.ret("graphics")
	}
}

func (d *fakeDevice) ret(call string) nvml.Return {
	if r, ok := d.fail[call]; ok {
		return r
	}
	return nvml.SUCCESS
}

// open opens the library f as Open("auto") would, failing the test unless NVML is the source.
func open(t *testing.T, f nvml.Interface) Inventory {
	t.Helper()
	inv := openNVML(f, slog.New(slog.DiscardHandler))
	if inv.Source() != SourceNVML {
		t.Fatalf("Source() = %q, want %q", inv.Source(), SourceNVML)
	}
	return inv
}

func TestNVMLDevices(t *testing.T) {
	inv := open(t, newFakeNVML())
	defer inv.Close()
	got, err := inv.Devices()
	if err != nil {
		t.Fatal(err)
	}
	want := []Device{
		{Index: 0, UUID: "GPU-fake-0", Name: "NVIDIA H100 80GB HBM3", MemoryTotal: 80 * gi, MemoryUsed: 30 * gi},
		{Index: 1, UUID: "GPU-fake-1", Name: "NVIDIA H100 80GB HBM3", MemoryTotal: 80 * gi},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Devices() = %+v\nwant %+v", got, want)
	}
}

func TestNVMLProcessMemory(t *testing.T) {
	inv := open(t, newFakeNVML())
	defer inv.Close()
	got, err := inv.ProcessMemory()
	if err != nil {
		t.Fatal(err)
	}
	want := []ProcessMemory{
		{PID: 1717, Device: 0, Bytes: 10 * gi},
		{PID: 4242, Device: 0, Bytes: 20 * gi},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("ProcessMemory() = %+v\nwant %+v", got, want)
	}
}

func TestNVMLProcessMemorySums(t *testing.T) {
	const mi = uint64(1) << 20
	tests := []struct {
		name              string
		compute, graphics []nvml.ProcessInfo
		graphicsRet       nvml.Return
		want              []ProcessMemory
	}{
		{
			name:    "compute and graphics processes",
			compute: []nvml.ProcessInfo{{Pid: 10, UsedGpuMemory: 100 * mi}},
			graphics: []nvml.ProcessInfo{
				{Pid: 20, UsedGpuMemory: 5 * mi},
			},
			want: []ProcessMemory{{PID: 10, Bytes: 100 << 20}, {PID: 20, Bytes: 5 << 20}},
		},
		{
			name:     "C+G process counted once",
			compute:  []nvml.ProcessInfo{{Pid: 10, UsedGpuMemory: 100 * mi}},
			graphics: []nvml.ProcessInfo{{Pid: 10, UsedGpuMemory: 100 * mi}},
			want:     []ProcessMemory{{PID: 10, Bytes: 100 << 20}},
		},
		{
			name: "one process in two MIG instances summed",
			compute: []nvml.ProcessInfo{
				{Pid: 10, UsedGpuMemory: 3 * mi, GpuInstanceId: 1},
				{Pid: 10, UsedGpuMemory: 4 * mi, GpuInstanceId: 2},
				{Pid: 11, UsedGpuMemory: 1 * mi, GpuInstanceId: 2, ComputeInstanceId: 1},
			},
			want: []ProcessMemory{{PID: 10, Bytes: 7 << 20}, {PID: 11, Bytes: 1 << 20}},
		},
		{
			name: "size not available left out",
			compute: []nvml.ProcessInfo{
				{Pid: 10, UsedGpuMemory: math.MaxUint64},
				{Pid: 11, UsedGpuMemory: 2 * mi},
			},
			want: []ProcessMemory{{PID: 11, Bytes: 2 << 20}},
		},
		{
			name:        "graphics not supported",
			compute:     []nvml.ProcessInfo{{Pid: 10, UsedGpuMemory: mi}},
			graphicsRet: nvml.ERROR_NOT_SUPPORTED,
			want:        []ProcessMemory{{PID: 10, Bytes: 1 << 20}},
		},
		{name: "idle", want: []ProcessMemory{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeNVML()
			f.devices = f.devices[:1]
			d := f.devices[0]
			d.compute, d.graphics = tt.compute, tt.graphics
			if tt.graphicsRet != nvml.SUCCESS {
				d.fail = map[string]nvml.Return{"graphics": tt.graphicsRet}
			}
			inv := open(t, f)
			defer inv.Close()
			got, err := inv.ProcessMemory()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("ProcessMemory() = %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestNVMLDeviceFails checks that a failing call on one device fails the query and that
// the error names the device, the call and NVML's code.
func TestNVMLDeviceFails(t *testing.T) {
	tests := []struct {
		name    string
		break_  func(f *fakeNVML)
		query   func(Inventory) error
		wantErr string
	}{
		{
			name:    "memory info",
			break_:  func(f *fakeNVML) { f.devices[1].fail = map[string]nvml.Return{"memory": nvml.ERROR_UNKNOWN} },
			query:   devicesErr,
			wantErr: "gpu: nvml: device 1 (GPU-fake-1): memory info: ERROR_UNKNOWN",
		},
		{
			name:    "uuid",
			break_:  func(f *fakeNVML) { f.devices[1].fail = map[string]nvml.Return{"uuid": nvml.ERROR_GPU_IS_LOST} },
			query:   devicesErr,
			wantErr: "gpu: nvml: device 1: uuid: ERROR_GPU_IS_LOST",
		},
		{
			name:    "handle",
			break_:  func(f *fakeNVML) { f.handleRet[1] = nvml.ERROR_NO_PERMISSION },
			query:   devicesErr,
			wantErr: "gpu: nvml: device 1: handle: ERROR_NO_PERMISSION",
		},
		{
			name:    "compute processes",
			break_:  func(f *fakeNVML) { f.devices[1].fail = map[string]nvml.Return{"compute": nvml.ERROR_GPU_IS_LOST} },
			query:   processErr,
			wantErr: "gpu: nvml: device 1: compute processes: ERROR_GPU_IS_LOST",
		},
		{
			name:    "graphics processes",
			break_:  func(f *fakeNVML) { f.devices[0].fail = map[string]nvml.Return{"graphics": nvml.ERROR_UNKNOWN} },
			query:   processErr,
			wantErr: "gpu: nvml: device 0: graphics processes: ERROR_UNKNOWN",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeNVML()
			tt.break_(f)
			inv := open(t, f)
			defer inv.Close()
			err := tt.query(inv)
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if !errors.Is(err, ErrNVML) {
				t.Errorf("err %q does not wrap ErrNVML", err)
			}
			var ret nvml.Return
			if !errors.As(err, &ret) {
				t.Errorf("err %q does not wrap an nvml.Return", err)
			}
		})
	}
}

func devicesErr(inv Inventory) error { _, err := inv.Devices(); return err }
func processErr(inv Inventory) error { _, err := inv.ProcessMemory(); return err }

func TestNVMLInitFails(t *testing.T) {
	tests := []struct {
		ret  nvml.Return
		want string
	}{
		{nvml.ERROR_LIBRARY_NOT_FOUND, "INFO no NVIDIA library: " + declareHint},
		{nvml.ERROR_DRIVER_NOT_LOADED, "WARN NVML init failed: " + declareHint},
		{nvml.ERROR_NO_PERMISSION, "WARN NVML init failed: " + declareHint},
	}
	for _, tt := range tests {
		t.Run(tt.ret.Error(), func(t *testing.T) {
			f := newFakeNVML()
			f.initRet = tt.ret
			logs := &recorder{}
			inv := openNVML(f, slog.New(logs))
			if inv.Source() != SourceNone {
				t.Fatalf("Source() = %q, want %q", inv.Source(), SourceNone)
			}
			if devs, err := inv.Devices(); len(devs) != 0 || err != nil {
				t.Errorf("Devices() = %v, %v; want no GPUs", devs, err)
			}
			if err := inv.Close(); err != nil {
				t.Errorf("Close(): %v", err)
			}
			if got := logs.messages(); !slices.Equal(got, []string{tt.want}) {
				t.Errorf("logged %q, want [%q]", got, tt.want)
			}
			if n := len(f.ShutdownCalls()); n != 0 {
				t.Errorf("Shutdown called %d times after a failed Init", n)
			}
		})
	}
}

func TestNVMLClose(t *testing.T) {
	f := newFakeNVML()
	inv := open(t, f)
	if err := inv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := inv.Close(); err != nil {
		t.Fatalf("second Close(): %v", err)
	}
	if n := len(f.ShutdownCalls()); n != 1 {
		t.Fatalf("Shutdown called %d times, want 1", n)
	}
	if _, err := inv.Devices(); !errors.Is(err, ErrClosed) {
		t.Errorf("Devices() after Close: %v, want ErrClosed", err)
	}
	if _, err := inv.ProcessMemory(); !errors.Is(err, ErrClosed) {
		t.Errorf("ProcessMemory() after Close: %v, want ErrClosed", err)
	}
}

func TestNVMLCloseFails(t *testing.T) {
	f := newFakeNVML()
	f.shutdownRet = nvml.ERROR_UNKNOWN
	inv := open(t, f)
	err := inv.Close()
	if err == nil || !errors.Is(err, ErrNVML) || !strings.Contains(err.Error(), "shutdown: ERROR_UNKNOWN") {
		t.Fatalf("Close() = %v, want an NVML shutdown error", err)
	}
}

// TestNVMLConcurrent runs queries beside Close under -race: each query either answers or
// says ErrClosed, and Shutdown happens once.
func TestNVMLConcurrent(t *testing.T) {
	f := newFakeNVML()
	inv := open(t, f)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if _, err := inv.Devices(); err != nil && !errors.Is(err, ErrClosed) {
					t.Error(err)
				}
				if _, err := inv.ProcessMemory(); err != nil && !errors.Is(err, ErrClosed) {
					t.Error(err)
				}
			}
		})
	}
	wg.Go(func() { inv.Close() })
	wg.Wait()
	if n := len(f.ShutdownCalls()); n != 1 {
		t.Fatalf("Shutdown called %d times, want 1", n)
	}
}

// TestNVMLDGXH100 reads go-nvml's own model of a DGX H100 (eight 80 GiB H100s).
func TestNVMLDGXH100(t *testing.T) {
	inv := open(t, dgxh100.New())
	defer inv.Close()
	devs, err := inv.Devices()
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 8 {
		t.Fatalf("%d devices, want 8", len(devs))
	}
	uuids := map[string]bool{}
	for i, d := range devs {
		if d.Index != i || d.Name != "NVIDIA H100 80GB HBM3" || d.MemoryTotal != 80*gi || d.Declared ||
			!strings.HasPrefix(d.UUID, "GPU-") || uuids[d.UUID] {
			t.Errorf("device %d = %+v", i, d)
		}
		uuids[d.UUID] = true
	}
}
