package gpu

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

const gi = int64(1) << 30

func declaredDevices(sizes ...int64) []Device {
	var devs []Device
	for i, b := range sizes {
		id := "declared-" + strconv.Itoa(i)
		devs = append(devs, Device{Index: i, UUID: id, Name: id, MemoryTotal: b, Declared: true})
	}
	return devs
}

func TestParseDeclared(t *testing.T) {
	tests := []struct {
		spec       string
		wantSource string
		want       []Device
		wantErr    []string // substrings of the error, one per bad entry; nil: no error
	}{
		{spec: "80Gi,80Gi", wantSource: SourceDeclared, want: declaredDevices(80*gi, 80*gi)},
		{spec: "81920Mi", wantSource: SourceDeclared, want: declaredDevices(80 * gi)},
		{spec: "40G", wantSource: SourceDeclared, want: declaredDevices(40e9)},
		{spec: " 80Gi , 1.5Gi ,24Gi ", wantSource: SourceDeclared, want: declaredDevices(80*gi, 3*gi/2, 24*gi)},
		{spec: "1Mi", wantSource: SourceDeclared, want: declaredDevices(1 << 20)},
		{spec: "1Pi", wantSource: SourceDeclared, want: declaredDevices(1 << 50)},
		{spec: "none", wantSource: SourceNone},
		{spec: " None ", wantSource: SourceNone},

		{spec: "", wantErr: []string{`--gpus "": empty`}},
		{spec: "   ", wantErr: []string{`--gpus "": empty`}},
		{spec: "80Gx", wantErr: []string{`--gpus: entry 1 "80Gx": quantities must match`}},
		{spec: "80Gi,80Gx", wantErr: []string{`--gpus: entry 2 "80Gx": quantities must match`}},
		{spec: "80Gi,", wantErr: []string{`--gpus: entry 2 "": empty`}},
		{spec: "80Gi,,80Gi", wantErr: []string{`--gpus: entry 2 "": empty`}},
		{spec: "0", wantErr: []string{`--gpus: entry 1 "0": memory must be positive`}},
		{spec: "-80Gi", wantErr: []string{`--gpus: entry 1 "-80Gi": memory must be positive`}},
		{spec: "80", wantErr: []string{`--gpus: entry 1 "80": 80 bytes, less than 1Mi: did you mean 80Gi?`}},
		{spec: "512Ki", wantErr: []string{`--gpus: entry 1 "512Ki": less than 1Mi`}},
		{spec: "2Pi", wantErr: []string{`--gpus: entry 1 "2Pi": more than 1Pi`}},
		{spec: "9Ei", wantErr: []string{`--gpus: entry 1 "9Ei": more than 1Pi`}},
		{spec: "1.0000001Gi", wantErr: []string{`--gpus: entry 1 "1.0000001Gi": not a whole number of bytes`}},
		{spec: "80Gi,80Gi,none", wantErr: []string{`--gpus: entry 3 "none": quantities must match`}},
		{spec: "auto", wantErr: []string{`--gpus: entry 1 "auto": quantities must match`}},
		{spec: "80Gx,80Gi,0", wantErr: []string{
			`--gpus: entry 1 "80Gx": quantities must match`,
			`--gpus: entry 3 "0": memory must be positive`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			inv, err := ParseDeclared(tt.spec)
			if tt.wantErr != nil {
				checkSpecErr(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("ParseDeclared(%q): %v", tt.spec, err)
			}
			checkDeclared(t, inv, tt.wantSource, tt.want)
		})
	}
}

// checkSpecErr checks that err joins one *SpecError per wanted substring, in order.
func checkSpecErr(t *testing.T, err error, want []string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", want)
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	if len(errs) != len(want) {
		t.Fatalf("error %q has %d parts, want %d: %q", err, len(errs), len(want), want)
	}
	for i, e := range errs {
		var se *SpecError
		if !errors.As(e, &se) {
			t.Errorf("part %d %q is not a *SpecError", i, e)
		}
		if !strings.Contains(e.Error(), want[i]) {
			t.Errorf("part %d = %q, want it to contain %q", i, e, want[i])
		}
	}
}

// checkDeclared checks an inventory that must measure nothing.
func checkDeclared(t *testing.T, inv Inventory, source string, want []Device) {
	t.Helper()
	if got := inv.Source(); got != source {
		t.Errorf("Source() = %q, want %q", got, source)
	}
	devs, err := inv.Devices()
	if err != nil {
		t.Fatalf("Devices(): %v", err)
	}
	if !slices.Equal(devs, want) {
		t.Errorf("Devices() = %+v\nwant %+v", devs, want)
	}
	for _, d := range devs {
		if !d.Declared || d.MemoryUsed != 0 {
			t.Errorf("device %d shown as measured: %+v", d.Index, d)
		}
	}
	pm, err := inv.ProcessMemory()
	if err != nil || len(pm) != 0 {
		t.Errorf("ProcessMemory() = %v, %v; want nothing measured", pm, err)
	}
	if err := inv.Close(); err != nil {
		t.Errorf("Close(): %v", err)
	}
}

func TestDeclaredDevicesAreCopies(t *testing.T) {
	inv, err := ParseDeclared("80Gi")
	if err != nil {
		t.Fatal(err)
	}
	devs, _ := inv.Devices()
	devs[0].MemoryUsed = 1
	again, _ := inv.Devices()
	if again[0].MemoryUsed != 0 {
		t.Fatalf("a caller's edit reached the inventory: %+v", again[0])
	}
}

func TestOpen(t *testing.T) {
	tests := []struct {
		spec       string
		wantSource string
		want       []Device
		wantErr    []string
	}{
		{spec: "none", wantSource: SourceNone},
		{spec: "80Gi,80Gi", wantSource: SourceDeclared, want: declaredDevices(80*gi, 80*gi)},
		{spec: " 40G ", wantSource: SourceDeclared, want: declaredDevices(40e9)},
		{spec: "80Gi,80Gx", wantErr: []string{`--gpus: entry 2 "80Gx"`}},
		{spec: "nvml", wantErr: []string{`--gpus: entry 1 "nvml"`}},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			logs := &recorder{}
			inv, err := Open(tt.spec, slog.New(logs))
			if tt.wantErr != nil {
				checkSpecErr(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("Open(%q): %v", tt.spec, err)
			}
			checkDeclared(t, inv, tt.wantSource, tt.want)
			if got := logs.messages(); len(got) != 0 {
				t.Errorf("Open(%q) logged %q; an explicit spec needs no explanation", tt.spec, got)
			}
		})
	}
}

// TestOpenAuto runs the real thing: on a machine with NVIDIA's library and driver it finds
// NVML; elsewhere (and always without cgo) it finds no GPUs and says so once.
func TestOpenAuto(t *testing.T) {
	for _, spec := range []string{"", "auto", "AUTO"} {
		t.Run(spec, func(t *testing.T) {
			logs := &recorder{}
			inv, err := Open(spec, slog.New(logs))
			if err != nil {
				t.Fatalf("Open(%q): %v", spec, err)
			}
			defer func() {
				if err := inv.Close(); err != nil {
					t.Errorf("Close(): %v", err)
				}
			}()
			switch inv.Source() {
			case SourceNVML:
				t.Logf("NVML found; logged %q", logs.messages())
			case SourceNone:
				got := logs.messages()
				if len(got) != 1 || !strings.HasSuffix(got[0], declareHint) {
					t.Fatalf("logged %q, want one line ending %q", got, declareHint)
				}
				if devs, err := inv.Devices(); len(devs) != 0 || err != nil {
					t.Errorf("Devices() = %v, %v; want none", devs, err)
				}
			default:
				t.Fatalf("Source() = %q, want nvml or none", inv.Source())
			}
		})
	}
}

func TestOpenNilLogger(t *testing.T) {
	inv, err := Open("auto", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := inv.Close(); err != nil {
		t.Fatal(err)
	}
}

// recorder is a slog.Handler that keeps what it is given.
type recorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records = append(r.records, rec)
	return nil
}

func (r *recorder) messages() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.records {
		out = append(out, rec.Level.String()+" "+rec.Message)
	}
	return out
}
