package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	for _, content := range []string{"first", "second, longer than the first"} {
		if err := Write(dir, "state.json", []byte(content)); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, "state.json"))
		if err != nil || string(b) != content {
			t.Fatalf("read %q %v, want %q", b, err, content)
		}
	}
	if tmps, _ := filepath.Glob(TempPattern(dir, "state.json")); len(tmps) != 0 {
		t.Errorf("temporary files left: %v", tmps)
	}
	// A directory that cannot take the file: an error, and the old file untouched.
	if err := Write(filepath.Join(dir, "missing"), "state.json", []byte("x")); err == nil {
		t.Error("a missing directory: no error")
	}
	if err := os.Mkdir(filepath.Join(dir, "over"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Write(dir, "over", []byte("x")); err == nil {
		t.Error("renaming over a directory: no error")
	}
	if tmps, _ := filepath.Glob(TempPattern(dir, "over")); len(tmps) != 0 {
		t.Errorf("a failed write left %v", tmps)
	}
}
