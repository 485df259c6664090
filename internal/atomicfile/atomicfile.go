// Package atomicfile writes a file so that a crash leaves either the old content or the new,
// never a part: the data goes to a temporary file beside it (NAME.tmp-*), is synced, renamed
// over NAME, and the directory is synced so the rename survives a power cut.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Write replaces dir/name with data atomically. A temporary file it could not finish is
// removed; one a crash left behind matches TempPattern(name).
func Write(dir, name string, data []byte) error {
	tmp, err := os.CreateTemp(dir, name+".tmp-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, name))
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// TempPattern is the glob of the temporary files Write makes for name.
func TempPattern(dir, name string) string { return filepath.Join(dir, name+".tmp-*") }
