package gpu

import (
	"errors"
	"log/slog"
	"strings"
)

// Sources, as Inventory.Source returns them.
const (
	SourceNVML     = "nvml"     // measured by NVIDIA's management library
	SourceDeclared = "declared" // told by `infera up --gpus 80Gi,...`; nothing measured
	SourceNone     = "none"     // no GPUs
)

// Device is one GPU. For a declared device MemoryUsed is 0 and Declared is true: the only
// figure is the total the operator declared.
type Device struct {
	Index       int
	UUID        string
	Name        string
	MemoryTotal int64 // bytes
	MemoryUsed  int64 // bytes, measured; 0 when Declared
	Declared    bool
}

// ProcessMemory is the memory one process holds on one device, in bytes, as NVML measures it.
type ProcessMemory struct {
	PID    int
	Device int // Device.Index
	Bytes  int64
}

// Inventory is the GPUs of this machine. Its methods may be called concurrently.
type Inventory interface {
	// Devices lists the GPUs by index.
	Devices() ([]Device, error)
	// ProcessMemory lists, by device then PID, the memory processes hold; empty unless measured.
	ProcessMemory() ([]ProcessMemory, error)
	// Source is SourceNVML, SourceDeclared or SourceNone.
	Source() string
	// Close releases the source (NVML's Shutdown). Calling it again does nothing.
	Close() error
}

var (
	// ErrNVML wraps the failure of an NVML call; the nvml.Return is wrapped beside it.
	ErrNVML = errors.New("gpu: nvml")
	// ErrClosed is returned by an NVML inventory's queries after Close.
	ErrClosed = errors.New("gpu: inventory closed")
)

// declareHint ends the log line that says why "auto" found no GPUs.
const declareHint = "no GPUs (pass --gpus 80Gi,... to declare an inventory)"

// Open turns the value of `infera up --gpus` into an Inventory:
//   - "" or "auto": NVML when its library loads and initialises, else no GPUs, saying why
//     once in log (Info when there is no library or no cgo, Warn when NVML is there but
//     fails to initialise);
//   - "none": no GPUs;
//   - anything else: a declared list, as [ParseDeclared] reads it.
//
// A nil log discards.
func Open(spec string, log *slog.Logger) (Inventory, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	switch s := strings.TrimSpace(spec); {
	case s == "" || strings.EqualFold(s, "auto"):
		return openAuto(log), nil
	default:
		return ParseDeclared(s)
	}
}

// none is the inventory of no GPUs.
type none struct{}

func (none) Devices() ([]Device, error)              { return nil, nil }
func (none) ProcessMemory() ([]ProcessMemory, error) { return nil, nil }
func (none) Source() string                          { return SourceNone }
func (none) Close() error                            { return nil }
