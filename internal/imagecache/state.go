package imagecache

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/infera-dev/infera/internal/atomicfile"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// The state file, Dir/imagecache.json, is what must survive a restart: which images infera
// pulled (ownership: the only images it ever removes), when, when they were last used, and
// which images each cache evicted (so that an evicted image is not pulled again after a
// restart unless its cache changed). It is rewritten whole and atomically (a temporary file,
// fsync, rename, fsync of the directory) by the Run loop when something changed. A file that
// cannot be read as this version is reported and the cache starts empty: infera then owns
// nothing, so it removes nothing it did not pull after that.

const (
	stateName    = "imagecache.json"
	stateVersion = 1
)

type stateFile struct {
	Version int          `json:"version"`
	Images  []savedImage `json:"images"`
	Caches  []savedCache `json:"caches"`
}

// savedImage is one image infera knows, by normalized reference.
type savedImage struct {
	Ref      string    `json:"ref"`
	ID       string    `json:"id,omitempty"`
	Digest   string    `json:"digest,omitempty"`
	Size     int64     `json:"size,omitempty"`
	Owned    bool      `json:"owned,omitempty"`
	PulledAt time.Time `json:"pulledAt,omitzero"`
	LastUsed time.Time `json:"lastUsed,omitzero"`
}

// savedCache is what a cache decided that outlives a restart.
type savedCache struct {
	Name string `json:"name"`
	// Fingerprint is a digest of the cache's spec; evictions are kept only while it matches.
	Fingerprint string            `json:"fingerprint"`
	Evicted     map[string]string `json:"evicted,omitempty"` // ref → reason
	Ready       bool              `json:"ready,omitempty"`   // has been Ready: Updating, not Creating
}

// loadState reads dir's state file. A missing file is an empty state; one that cannot be
// decoded is returned empty with a note saying why.
func loadState(dir string) (stateFile, string, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateName))
	if errors.Is(err, fs.ErrNotExist) {
		return stateFile{Version: stateVersion}, "", nil
	}
	if err != nil {
		return stateFile{}, "", fmt.Errorf("imagecache: read state: %w", err)
	}
	var f stateFile
	if err := json.Unmarshal(b, &f); err != nil {
		return stateFile{Version: stateVersion}, fmt.Sprintf("%s: %v: starting empty", filepath.Join(dir, stateName), err), nil
	}
	if f.Version != stateVersion {
		return stateFile{Version: stateVersion}, fmt.Sprintf("%s: version %d, want %d: starting empty", filepath.Join(dir, stateName), f.Version, stateVersion), nil
	}
	return f, "", nil
}

// writeState writes f to dir's state file atomically.
func writeState(dir string, f stateFile) error {
	f.Version = stateVersion
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("imagecache: encode state: %w", err)
	}
	if err := atomicfile.Write(dir, stateName, b); err != nil {
		return fmt.Errorf("imagecache: write state: %w", err)
	}
	return nil
}

// removeTemps removes temporary state files an interrupted write left.
func removeTemps(dir string) {
	tmps, _ := filepath.Glob(atomicfile.TempPattern(dir, stateName))
	for _, p := range tmps {
		_ = os.Remove(p)
	}
}
