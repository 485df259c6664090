package modelserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// newModelDir writes a model of size bytes with seed 7 to a fresh directory.
func newModelDir(tb testing.TB, size int64) string {
	tb.Helper()
	dir := tb.TempDir()
	if _, err := Init(dir, InitOptions{Size: size, Seed: 7}); err != nil {
		tb.Fatal(err)
	}
	return dir
}

func fileHashes(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := make(map[string]string)
	for _, name := range []string{WeightsFile, ConfigFile, TokenizerFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		out[name] = hex.EncodeToString(sum[:])
	}
	return out
}

func TestInitDeterministic(t *testing.T) {
	base := InitOptions{Size: 1 << 20, Seed: 1}
	tests := []struct {
		name string
		b    InitOptions
		same map[string]bool // per file: identical to base's?
	}{
		{"same options", base, map[string]bool{WeightsFile: true, ConfigFile: true, TokenizerFile: true}},
		{"other seed", InitOptions{Size: 1 << 20, Seed: 2}, map[string]bool{WeightsFile: false, ConfigFile: false, TokenizerFile: true}},
		{"other name", InitOptions{Size: 1 << 20, Seed: 1, Name: "other"}, map[string]bool{WeightsFile: true, ConfigFile: false, TokenizerFile: true}},
		{"other size", InitOptions{Size: 2 << 20, Seed: 1}, map[string]bool{WeightsFile: false, ConfigFile: false, TokenizerFile: true}},
	}
	a := t.TempDir()
	if _, err := Init(a, base); err != nil {
		t.Fatal(err)
	}
	ha := fileHashes(t, a)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := t.TempDir()
			if _, err := Init(b, tt.b); err != nil {
				t.Fatal(err)
			}
			hb := fileHashes(t, b)
			for file, same := range tt.same {
				if (ha[file] == hb[file]) != same {
					t.Errorf("%s: identical = %v, want %v", file, !same, same)
				}
			}
		})
	}
}

func TestInitInfo(t *testing.T) {
	dir := t.TempDir()
	info, err := Init(dir, InitOptions{Size: 4 << 20, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != st.Size() || info.Name != DefaultName || info.Note != SyntheticNote || info.Vocab != initVocab {
		t.Errorf("info = %+v; file is %d bytes", info, st.Size())
	}
	if len(info.Tensors) != info.Layers+2 {
		t.Errorf("%d tensors for %d layers", len(info.Tensors), info.Layers)
	}
	sum := fileHashes(t, dir)[WeightsFile]
	if info.SHA256 != sum {
		t.Errorf("info.SHA256 = %s, file's is %s", info.SHA256, sum)
	}
	s := info.String()
	for _, want := range []string{"synthetic weights", "model.embed_tokens.weight", "lm_head.weight", "4.0 MiB", sum} {
		if !strings.Contains(s, want) {
			t.Errorf("Info.String() lacks %q:\n%s", want, s)
		}
	}
}

func TestInitReplacesAtomically(t *testing.T) {
	dir := t.TempDir()
	// A crashed Init's leftovers.
	if err := os.WriteFile(filepath.Join(dir, ".model.safetensors.tmp-123"), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, seed := range []uint64{1, 2} {
		if _, err := Init(dir, InitOptions{Size: 1 << 20, Seed: seed}); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "config.json model.safetensors tokenizer.json" {
		t.Errorf("directory holds %v", names)
	}
	m, err := Load(context.Background(), dir, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Info().Seed != 2 {
		t.Errorf("loaded seed %d, want the second Init's 2", m.Info().Seed)
	}
}

func TestInitOptionsErrors(t *testing.T) {
	if _, err := Init(t.TempDir(), InitOptions{Size: 1000}); err == nil || !strings.Contains(err.Error(), "below the minimum") {
		t.Errorf("Init of 1000 bytes: err = %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Init(file, InitOptions{Size: 1 << 20}); err == nil || !strings.Contains(err.Error(), "modelserver: init "+file) {
		t.Errorf("Init into a file: err = %v", err)
	}
}

func TestChooseShape(t *testing.T) {
	for _, size := range []int64{MinSize, 1 << 20, 3 << 20, 16 << 20, 64 << 20, 100 << 20, DefaultSize, 1000 << 20, 7 << 30} {
		s := chooseShape(size)
		off := float64(s.dataBytes()-size) / float64(size)
		if off > 0.01 || off < -0.01 || s.hidden%64 != 0 || s.layers < 1 {
			t.Errorf("chooseShape(%d) = %+v: %d bytes, %.2f%% off", size, s, s.dataBytes(), off*100)
		}
	}
}
