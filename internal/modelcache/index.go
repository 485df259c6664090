package modelcache

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/infera-dev/infera/internal/atomicfile"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/infera-dev/infera/internal/fluid"
)

// The index says which datasets the cache holds, where, and how complete: Root/index.json,
// rewritten whole and atomically (a temporary file, fsync, rename, fsync of the directory), so
// that a crash leaves the old index or the new one. It is written when a dataset is placed
// (before its first file is written, so no directory is ever unknown to it), at most once a
// second while files complete, when a fetch completes, and after evictions and removals.
//
// On load every entry is checked against the disk: its directory must exist inside its level
// directory, and each file marked done must be a regular file of the recorded size. A file that
// is not is deleted and marked to fetch again; the entry is then incomplete, and the dataset is
// fetched again (only what is missing) when it is next wanted. An entry whose directory is gone
// is dropped. Done files are trusted otherwise: the fetcher verified them before renaming them
// into place.

const (
	indexName    = "index.json"
	indexVersion = 1
)

type indexFile struct {
	Version  int           `json:"version"`
	Datasets []*indexEntry `json:"datasets"`
}

// indexEntry is one cached dataset.
type indexEntry struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// DataKey identifies the data: a digest of the mounts (mount points, paths, options) the
	// files came from. A dataset whose mounts change is fetched anew.
	DataKey  string           `json:"dataKey"`
	Medium   fluid.MediumType `json:"medium"`
	LevelDir string           `json:"levelDir"` // the level directory holding it
	Dir      string           `json:"dir"`      // LevelDir/namespace/name
	Files    []indexedFile    `json:"files"`
	Complete bool             `json:"complete"`
	Bytes    int64            `json:"bytes"` // on disk, when last measured
	LastUsed time.Time        `json:"lastUsed"`
	// Orphan is set when no desired dataset owns the entry: deleted under OnDemand, or not named
	// since a restart. It is evicted like any unpinned dataset, or claimed again.
	Orphan bool `json:"orphan,omitempty"`
	// DropOnRelease is set when the dataset was deleted under OnRuntimeDeleted while a replica
	// still had it mounted: the files go when the last replica lets go.
	DropOnRelease bool `json:"dropOnRelease,omitempty"`
}

// indexedFile is one file of a cached dataset.
type indexedFile struct {
	Path   string `json:"path"`  // in the dataset, slash-separated, no leading slash
	Mount  int    `json:"mount"` // index in spec.mounts
	Object Object `json:"object"`
	Done   bool   `json:"done"`
}

func (e *indexEntry) key() string { return e.Namespace + "/" + e.Name }

func (e *indexEntry) clone() *indexEntry {
	c := *e
	c.Files = append([]indexedFile(nil), e.Files...)
	return &c
}

// loadIndex reads root's index and checks it against the disk. It returns the entries kept and
// a description of each inconsistency it mended; a missing index is an empty cache, and an
// index that cannot be decoded is reported and treated as empty.
func loadIndex(root string) (map[string]*indexEntry, []string, error) {
	out := map[string]*indexEntry{}
	b, err := os.ReadFile(filepath.Join(root, indexName))
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("modelcache: read index: %w", err)
	}
	var f indexFile
	if err := json.Unmarshal(b, &f); err != nil {
		return out, []string{fmt.Sprintf("index %s: %v: starting empty", filepath.Join(root, indexName), err)}, nil
	}
	if f.Version != indexVersion {
		return out, []string{fmt.Sprintf("index %s: version %d, want %d: starting empty", filepath.Join(root, indexName), f.Version, indexVersion)}, nil
	}
	var notes []string
	for _, e := range f.Datasets {
		if e == nil {
			continue
		}
		note, keep := checkEntry(e)
		if note != "" {
			notes = append(notes, note)
		}
		if keep {
			out[e.key()] = e
		}
	}
	return out, notes, nil
}

// checkEntry mends e against the disk; keep is false when e must be dropped.
func checkEntry(e *indexEntry) (note string, keep bool) {
	key := e.key()
	want := filepath.Join(e.LevelDir, e.Namespace, e.Name)
	if e.Namespace == "" || e.Name == "" || !filepath.IsAbs(e.LevelDir) || e.Dir != want ||
		strings.Contains(e.Namespace, "/") || strings.Contains(e.Name, "/") {
		return fmt.Sprintf("dataset %s: index entry names directory %q, not %q: dropped", key, e.Dir, want), false
	}
	if e.DropOnRelease {
		_ = os.RemoveAll(e.Dir)
		return fmt.Sprintf("dataset %s: deleted while mounted: removed %s", key, e.Dir), false
	}
	if fi, err := os.Stat(e.Dir); err != nil || !fi.IsDir() {
		return fmt.Sprintf("dataset %s: directory %s is missing: dropped, fetched again when wanted", key, e.Dir), false
	}
	var bad []string
	for i := range e.Files {
		f := &e.Files[i]
		if !localPath(f.Path) {
			return fmt.Sprintf("dataset %s: index entry names file %q outside its directory: dropped", key, f.Path), false
		}
		if !f.Done {
			continue
		}
		p := filepath.Join(e.Dir, filepath.FromSlash(f.Path))
		fi, err := os.Lstat(p)
		if err == nil && fi.Mode().IsRegular() && fi.Size() == f.Object.Size {
			continue
		}
		switch {
		case err != nil:
			bad = append(bad, f.Path+" (missing)")
		case !fi.Mode().IsRegular():
			bad = append(bad, f.Path+" (not a regular file)")
			_ = os.RemoveAll(p)
		default:
			bad = append(bad, fmt.Sprintf("%s (%d bytes, want %d)", f.Path, fi.Size(), f.Object.Size))
			_ = os.Remove(p)
		}
		f.Done = false
		e.Complete = false
	}
	e.Bytes, _ = diskUsage(e.Dir)
	if len(bad) > 0 {
		return fmt.Sprintf("dataset %s: %s: fetched again", key, strings.Join(bad, ", ")), true
	}
	return "", true
}

// localPath reports whether p, a slash-separated path in a dataset, stays inside it.
func localPath(p string) bool {
	return p != "" && !strings.HasPrefix(p, "/") && path.Clean(p) == p && filepath.IsLocal(filepath.FromSlash(p))
}

// writeIndex writes entries to root's index atomically.
func writeIndex(root string, entries []*indexEntry) error {
	b, err := json.Marshal(indexFile{Version: indexVersion, Datasets: entries})
	if err != nil {
		return fmt.Errorf("modelcache: encode index: %w", err)
	}
	if err := atomicfile.Write(root, indexName, b); err != nil {
		return fmt.Errorf("modelcache: write index: %w", err)
	}
	return nil
}
