package modelcache

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// journal records a fetch in progress, beside its partial file as dst + ".journal", so a
// fetch interrupted by anything (kill -9, a reboot, an error) resumes where it stopped. It is
// small (one bit a chunk) and replaced atomically: written to a temporary file, renamed over.
//
// A chunk is recorded in Done once its bytes are written to the partial file. Within one boot
// of the machine those bytes are in the page cache whatever happened to the process, so a
// resume in the same boot (the journal's Boot) trusts Done and re-fetches only the chunks that
// were in flight. After a reboot only Synced is trusted: the chunks that were complete when
// the partial file was last fsync'd, which the fetcher does every syncEvery bytes, not per
// chunk.
type journal struct {
	Version   int    `json:"version"`
	Size      int64  `json:"size"`
	ETag      string `json:"etag"`
	ChunkSize int64  `json:"chunkSize"`
	Boot      string `json:"boot,omitempty"`
	Done      bitmap `json:"done"`
	Synced    bitmap `json:"synced"`
}

const journalVersion = 1

// readJournal reads a journal; a missing, torn or foreign file is an error (the fetch starts
// over).
func readJournal(path string) (*journal, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var j journal
	if err := json.Unmarshal(data, &j); err != nil {
		return nil, fmt.Errorf("journal %s: %w", path, err)
	}
	if j.Version != journalVersion {
		return nil, fmt.Errorf("journal %s: version %d", path, j.Version)
	}
	return &j, nil
}

// write replaces the journal at path. With durable it is fsync'd before the rename and its
// directory after, so that it survives a power loss; without, it survives the process only.
func (j *journal) write(path string, durable bool) error {
	data, err := json.Marshal(j)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil && durable {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		return fmt.Errorf("journal %s: %w", path, err)
	}
	return nil
}

// trusted is the set of chunks a resume may keep, per the journal's doc.
func (j *journal) trusted(boot string) bitmap {
	if boot != "" && boot == j.Boot {
		return j.Done
	}
	return j.Synced
}

// bitmap is a set of chunk numbers; JSON encodes it in base64.
type bitmap []byte

func newBitmap(n int) bitmap { return make(bitmap, (n+7)/8) }

func (b bitmap) has(i int) bool { return i/8 < len(b) && b[i/8]&(1<<(i%8)) != 0 }
func (b bitmap) set(i int)      { b[i/8] |= 1 << (i % 8) }
func (b bitmap) clone() bitmap  { return append(bitmap(nil), b...) }

// bootID names this boot of the machine ("" where the kernel does not say).
var bootID = sync.OnceValue(func() string {
	data, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
})

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
