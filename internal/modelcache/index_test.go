package modelcache

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/fluid"
)

func writeFile(t *testing.T, p string, n int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, make([]byte, n), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestIndexRoundTrip(t *testing.T) {
	root := t.TempDir()
	e := &indexEntry{
		Namespace: "default", Name: "m", DataKey: "k", Medium: fluid.MediumSSD,
		LevelDir: root, Dir: filepath.Join(root, "default", "m"),
		Files: []indexedFile{
			{Path: "w/a.bin", Object: Object{Key: "a.bin", Size: 10, ETag: "e1", Checksums: map[string]string{"md5": "00"}}, Done: true},
			{Path: "w/b.bin", Mount: 1, Object: Object{Key: "b.bin", Size: 20}},
		},
		LastUsed: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	writeFile(t, filepath.Join(e.Dir, "w", "a.bin"), 10)
	if err := writeIndex(root, []*indexEntry{e}); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(filepath.Join(root, indexName+".tmp-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	got, notes, err := loadIndex(root)
	if err != nil || len(notes) != 0 {
		t.Fatalf("loadIndex: %v %v", err, notes)
	}
	g := got["default/m"]
	if g == nil {
		t.Fatal("entry lost")
	}
	if g.Bytes <= 0 {
		t.Errorf("bytes on disk not measured: %d", g.Bytes)
	}
	g.Bytes = 0
	if !reflect.DeepEqual(g, e) {
		t.Errorf("got  %+v\nwant %+v", g, e)
	}
}

func TestIndexCheck(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(t *testing.T, dir string) // the dataset's directory
		entry    func(e *indexEntry)
		keep     bool
		complete bool
		done     []bool
		note     string
	}{
		{
			name:     "consistent",
			setup:    func(t *testing.T, dir string) { writeFile(t, dir+"/a", 10); writeFile(t, dir+"/b", 20) },
			keep:     true,
			complete: true,
			done:     []bool{true, true},
		},
		{
			name:  "a file of the wrong size: deleted, fetched again",
			setup: func(t *testing.T, dir string) { writeFile(t, dir+"/a", 10); writeFile(t, dir+"/b", 5) },
			keep:  true,
			done:  []bool{true, false},
			note:  "dataset default/m: b (5 bytes, want 20): fetched again",
		},
		{
			name:  "a file missing",
			setup: func(t *testing.T, dir string) { writeFile(t, dir+"/b", 20) },
			keep:  true,
			done:  []bool{false, true},
			note:  "dataset default/m: a (missing): fetched again",
		},
		{
			name:  "a directory where a file was",
			setup: func(t *testing.T, dir string) { writeFile(t, dir+"/a/x", 1); writeFile(t, dir+"/b", 20) },
			keep:  true,
			done:  []bool{false, true},
			note:  "dataset default/m: a (not a regular file): fetched again",
		},
		{
			name: "the directory gone: dropped",
			note: "directory",
		},
		{
			name:  "a directory outside its level: dropped",
			setup: func(t *testing.T, dir string) { writeFile(t, dir+"/a", 10) },
			entry: func(e *indexEntry) { e.Dir = "/etc" },
			note:  "names directory",
		},
		{
			name:  "a file outside its directory: dropped",
			setup: func(t *testing.T, dir string) { writeFile(t, dir+"/a", 10) },
			entry: func(e *indexEntry) { e.Files[0].Path = "../../x" },
			note:  "outside its directory",
		},
		{
			name:  "deleted while mounted: removed",
			setup: func(t *testing.T, dir string) { writeFile(t, dir+"/a", 10) },
			entry: func(e *indexEntry) { e.DropOnRelease = true },
			note:  "deleted while mounted",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			level := t.TempDir()
			dir := filepath.Join(level, "default", "m")
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			e := &indexEntry{
				Namespace: "default", Name: "m", LevelDir: level, Dir: dir, Complete: true,
				Files: []indexedFile{{Path: "a", Object: Object{Size: 10}, Done: true}, {Path: "b", Object: Object{Size: 20}, Done: true}},
			}
			if tt.entry != nil {
				tt.entry(e)
			}
			note, keep := checkEntry(e)
			if keep != tt.keep || !strings.Contains(note, tt.note) || (tt.note == "" && note != "") {
				t.Fatalf("checkEntry = %q, %v; want %v, a note with %q", note, keep, tt.keep, tt.note)
			}
			if !keep {
				return
			}
			if e.Complete != tt.complete {
				t.Errorf("complete %v, want %v", e.Complete, tt.complete)
			}
			for i, f := range e.Files {
				if f.Done != tt.done[i] {
					t.Errorf("%s: done %v, want %v", f.Path, f.Done, tt.done[i])
				}
				if !f.Done && exists(filepath.Join(dir, f.Path)) {
					t.Errorf("%s: a file to fetch again is still there", f.Path)
				}
			}
		})
	}
}

func TestIndexDamaged(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, indexName), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, notes, err := loadIndex(root)
	if err != nil || len(got) != 0 || len(notes) != 1 || !strings.Contains(notes[0], "starting empty") {
		t.Errorf("a damaged index: %v %v %v; want an empty cache and a note", got, notes, err)
	}
	if err := os.WriteFile(filepath.Join(root, indexName), []byte(`{"version":99}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, notes, _ := loadIndex(root); len(notes) != 1 || !strings.Contains(notes[0], "version 99") {
		t.Errorf("a future index: %v", notes)
	}
	if got, notes, err := loadIndex(t.TempDir()); len(got) != 0 || len(notes) != 0 || err != nil {
		t.Errorf("no index: %v %v %v", got, notes, err)
	}
}
