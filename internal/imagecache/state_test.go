package imagecache

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestStateRoundTrip(t *testing.T) {
	dir := t.TempDir()
	want := stateFile{
		Version: stateVersion,
		Images:  []savedImage{{Ref: "docker.io/library/app:v1", ID: "sha256:a1", Digest: "docker.io/library/app@sha256:d", Size: 5, Owned: true, PulledAt: t0, LastUsed: t0.Add(1)}},
		Caches:  []savedCache{{Name: "ai", Fingerprint: "f", Evicted: map[string]string{"docker.io/library/b:1": "imageCacheSize"}, Ready: true}},
	}
	for range 2 { // the second write replaces the first
		if err := writeState(dir, want); err != nil {
			t.Fatal(err)
		}
	}
	got, note, err := loadState(dir)
	if err != nil || note != "" {
		t.Fatalf("load: %v %q", err, note)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("load:\n got %+v\nwant %+v", got, want)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only %s", len(entries), stateName)
	}
}

func TestStateUnreadable(t *testing.T) {
	tests := []struct {
		name, content, note string
	}{
		{"missing", "", ""},
		{"not JSON", "{", "starting empty"},
		{"another version", `{"version": 99}`, "version 99, want 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.content != "" {
				if err := os.WriteFile(filepath.Join(dir, stateName), []byte(tt.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			f, note, err := loadState(dir)
			if err != nil || len(f.Images) != 0 || len(f.Caches) != 0 {
				t.Fatalf("load = %+v, %v", f, err)
			}
			if (tt.note == "") != (note == "") || !strings.Contains(note, tt.note) {
				t.Errorf("note %q, want %q", note, tt.note)
			}
		})
	}
}

// TestNewRemovesTemps: New removes the temporary file an interrupted write left.
func TestNewRemovesTemps(t *testing.T) {
	dir := t.TempDir()
	tmp := filepath.Join(dir, stateName+".tmp-123")
	if err := os.WriteFile(tmp, []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Dir: dir, Engine: newFakeEngine()}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Errorf("temporary file still there: %v", err)
	}
}
