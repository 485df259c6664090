package modelserver

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// patchWeights rewrites the 4 bytes of the weights file at the given offset
// into the data section of tensor i.
func patchWeights(t *testing.T, dir string, tensor int, value uint32) {
	t.Helper()
	path := filepath.Join(dir, WeightsFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h, err := parseHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	at := h.DataStart + h.Tensors[tensor].Begin + 40
	binary.LittleEndian.PutUint32(b[at:], value)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		break_  func(t *testing.T, dir string)
		wantErr string
	}{
		{"missing config", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, ConfigFile)) }, "config.json: no such file"},
		{"missing weights", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, WeightsFile)) }, "model.safetensors: no such file"},
		{"bad tokenizer", func(t *testing.T, dir string) { os.WriteFile(filepath.Join(dir, TokenizerFile), []byte("{}"), 0o644) }, "want WordLevel"},
		{"truncated weights", func(t *testing.T, dir string) { os.Truncate(filepath.Join(dir, WeightsFile), 1<<19) }, "file truncated?"},
		{"not synthetic", func(t *testing.T, dir string) {
			p := filepath.Join(dir, ConfigFile)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.Replace(string(b), `"synthetic": true`, `"synthetic": false`, 1)), 0o644)
		}, "synthetic must be true"},
		{"NaN weight", func(t *testing.T, dir string) { patchWeights(t, dir, 3, 0x7fc00000) }, `tensor "model.layers.2.weight": value 10 is NaN`},
		{"Inf weight", func(t *testing.T, dir string) { patchWeights(t, dir, 0, math.Float32bits(float32(math.Inf(-1)))) }, `tensor "model.embed_tokens.weight": value 10 is -Inf`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := newModelDir(t, 1<<20)
			tt.break_(t, dir)
			m, err := Load(context.Background(), dir, LoadOptions{})
			if err == nil {
				m.Close()
				t.Fatal("Load succeeded")
			}
			if !errors.Is(err, ErrInvalidModel) || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "modelserver: load "+dir) {
				t.Errorf("Load: %v; want ErrInvalidModel and %q", err, tt.wantErr)
			}
			// Run fails the same way, before it is ready.
			err = Run(context.Background(), Config{ModelDir: dir, Addr: "127.0.0.1:0"}, func(string) { t.Error("ready called") })
			if !errors.Is(err, ErrInvalidModel) {
				t.Errorf("Run: %v", err)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	dir := newModelDir(t, 1<<20)
	m, err := Load(context.Background(), dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Verify(); err != nil {
		t.Errorf("Verify of an intact model: %v", err)
	}
	m.Close()

	// A finite value changed: loads, but the checksum says no.
	patchWeights(t, dir, 2, math.Float32bits(0.125))
	m, err = Load(context.Background(), dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Verify(); !errors.Is(err, ErrChecksum) {
		t.Errorf("Verify of a changed model: %v; want ErrChecksum", err)
	}
	err = Run(context.Background(), Config{ModelDir: dir, Addr: "127.0.0.1:0", Verify: true}, func(string) { t.Error("ready called") })
	if !errors.Is(err, ErrChecksum) {
		t.Errorf("Run with Verify: %v; want ErrChecksum", err)
	}
}

// TestTokenReadsEveryWeight: a change to any layer or the output projection
// changes what is generated, so each token really passes over them.
func TestTokenReadsEveryWeight(t *testing.T) {
	gen := func(dir string) []int {
		m, err := Load(context.Background(), dir, LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		seq := m.NewSequence(m.Encode("the sea"))
		var ids []int
		for range 12 {
			id, _ := seq.Next()
			ids = append(ids, id)
		}
		return ids
	}
	base := gen(newModelDir(t, 1<<20))
	info, _ := Init(t.TempDir(), InitOptions{Size: 1 << 20, Seed: 7})
	for _, tensor := range []int{1, info.Layers, info.Layers + 1} { // first layer, last layer, lm_head
		dir := newModelDir(t, 1<<20)
		// Zero a whole tensor.
		path := filepath.Join(dir, WeightsFile)
		b, _ := os.ReadFile(path)
		h, _ := parseHeader(b)
		clear(b[h.DataStart+h.Tensors[tensor].Begin : h.DataStart+h.Tensors[tensor].End])
		os.WriteFile(path, b, 0o644)
		if got := gen(dir); slices.Equal(got, base) {
			t.Errorf("zeroing %s did not change the tokens %v", h.Tensors[tensor].Name, got)
		}
	}
}

// TestSplitSameResult: how many CPUs share a token's work does not change
// the tokens.
func TestSplitSameResult(t *testing.T) {
	m, err := Load(context.Background(), newModelDir(t, 16<<20), LoadOptions{}) // layers of 3 MiB: split
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	gen := func(procs int) []int {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		seq := m.NewSequence(m.Encode("the sea"))
		var ids []int
		for range 8 {
			id, _ := seq.Next()
			ids = append(ids, id)
		}
		return ids
	}
	if one, four := gen(1), gen(4); !slices.Equal(one, four) {
		t.Errorf("1 CPU: %v, 4 CPUs: %v", one, four)
	}
}
