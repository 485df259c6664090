package store_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/infera-dev/infera/internal/store"
)

func TestOpenCreatesDirAndFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, store.FileName)
	s := openStore(t, path, store.Options{})
	if s.Revision() != 0 {
		t.Errorf("new store revision = %d", s.Revision())
	}
	for p, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s mode = %v, want %v", p, fi.Mode(), want)
		}
	}
}

func TestOpenZeroLengthFileStartsEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), store.FileName)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, path, store.Options{})
	if objs, err := s.List("", "", ""); err != nil || len(objs) != 0 || s.Revision() != 0 {
		t.Errorf("List = %v, %v; revision %d: want an empty store", objs, err, s.Revision())
	}
	mustApply(t, s, []store.Object{secret("a", "A")}, nil)
}

func TestReopenKeepsStateAndRevision(t *testing.T) {
	path := filepath.Join(t.TempDir(), store.FileName)
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, s, []store.Object{secret("a", "A"), secret("b", "B")}, nil)
	mustApply(t, s, nil, []store.Key{secret("b", "").Key})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, path, store.Options{})
	if s.Revision() != 2 {
		t.Errorf("revision after reopen = %d, want 2", s.Revision())
	}
	if got := snapshot(t, s); len(got) != 1 || got["a"] != (stored{"A", 1, 1, "test.yaml"}) {
		t.Errorf("state after reopen = %v", got)
	}
	if rev := mustApply(t, s, []store.Object{secret("c", "C")}, nil); rev != 3 {
		t.Errorf("first Apply after reopen got revision %d, want 3", rev)
	}
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), store.FileName)
	first := openStore(t, path, store.Options{})
	// flock locks belong to the open file, so a second Open in this
	// process conflicts exactly as another process would.
	_, err := store.Open(path, store.Options{Timeout: 10 * time.Millisecond})
	if !errors.Is(err, store.ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	want := "store: " + path + " is locked by another infera process (stop it, or pass --state-dir to use another directory)"
	if err.Error() != want {
		t.Errorf("error = %q\nwant    %q", err, want)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	openStore(t, path, store.Options{Timeout: 10 * time.Millisecond})
}

// writeValid creates a state file holding n objects of size bytes each.
func writeValid(t *testing.T, path string, n, size int) {
	t.Helper()
	s, err := store.Open(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var puts []store.Object
	for i := range n {
		puts = append(puts, secret(fmt.Sprintf("obj-%04d", i), strings.Repeat("x", size)))
	}
	mustApply(t, s, puts, nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// boltUpdate changes a closed state file behind the store's back.
func boltUpdate(t *testing.T, path string, fn func(*bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenCorrupt(t *testing.T) {
	tests := []struct {
		name string
		make func(t *testing.T, path string)
	}{{
		name: "random bytes",
		make: func(t *testing.T, path string) {
			b := make([]byte, 64<<10)
			r := rand.NewChaCha8([32]byte{1})
			_, _ = r.Read(b)
			writeFile(t, path, b)
		},
	}, {
		name: "short garbage",
		make: func(t *testing.T, path string) { writeFile(t, path, []byte("not a database\n")) },
	}, {
		name: "truncated to its meta pages",
		make: func(t *testing.T, path string) {
			writeValid(t, path, 200, 2000)
			truncate(t, path, func(int64) int64 { return 2 * int64(os.Getpagesize()) })
		},
	}, {
		name: "truncated to half",
		make: func(t *testing.T, path string) {
			writeValid(t, path, 200, 2000)
			truncate(t, path, func(n int64) int64 { return n / 2 })
		},
	}, {
		// bbolt reads the freelist page while opening: past the end of
		// the file, that is a memory fault, recovered as a panic.
		name: "truncated before its freelist page",
		make: func(t *testing.T, path string) {
			writeValid(t, path, 200, 2000)
			b := readFile(t, path)
			ps := os.Getpagesize()
			// The live meta page is the one with the higher txid; its
			// freelist page id is at offset 48 (page header 16, then
			// magic, version, pageSize, flags, root bucket 16).
			meta := b[:ps]
			if binary.LittleEndian.Uint64(b[ps+64:]) > binary.LittleEndian.Uint64(b[64:]) {
				meta = b[ps : 2*ps]
			}
			freelist := int64(binary.LittleEndian.Uint64(meta[48:]))
			if freelist < 3 {
				t.Fatalf("freelist page %d: layout assumption broken", freelist)
			}
			truncate(t, path, func(int64) int64 { return freelist * int64(ps) })
		},
	}, {
		name: "truncated inside the second meta page",
		make: func(t *testing.T, path string) {
			writeValid(t, path, 10, 100)
			truncate(t, path, func(int64) int64 { return int64(os.Getpagesize()) + 100 })
		},
	}, {
		name: "both meta pages overwritten",
		make: func(t *testing.T, path string) {
			writeValid(t, path, 10, 100)
			b := readFile(t, path)
			ps := os.Getpagesize()
			copy(b[16:64], bytes.Repeat([]byte{0xAB}, 48))
			copy(b[ps+16:ps+64], bytes.Repeat([]byte{0xAB}, 48))
			writeFile(t, path, b)
		},
	}, {
		name: "a bbolt file that is not ours",
		make: func(t *testing.T, path string) {
			boltUpdate(t, path, func(tx *bolt.Tx) error {
				_, err := tx.CreateBucket([]byte("something-else"))
				return err
			})
		},
	}, {
		name: "an undecodable record",
		make: func(t *testing.T, path string) {
			writeValid(t, path, 3, 10)
			boltUpdate(t, path, func(tx *bolt.Tx) error {
				return tx.Bucket([]byte("objects")).Put([]byte("\x00Secret\x00default\x00bad"), []byte{9, 9, 9})
			})
		},
	}, {
		name: "a record with a malformed key",
		make: func(t *testing.T, path string) {
			writeValid(t, path, 3, 10)
			boltUpdate(t, path, func(tx *bolt.Tx) error {
				return tx.Bucket([]byte("objects")).Put([]byte("no-separators"), []byte{1, 1, 1, 0, 0})
			})
		},
	}, {
		name: "a record newer than the revision counter",
		make: func(t *testing.T, path string) {
			writeValid(t, path, 3, 10)
			boltUpdate(t, path, func(tx *bolt.Tx) error {
				return tx.Bucket([]byte("meta")).Put([]byte("revision"), binary.BigEndian.AppendUint64(nil, 0))
			})
		},
	}, {
		name: "a newer schema",
		make: func(t *testing.T, path string) {
			writeValid(t, path, 3, 10)
			boltUpdate(t, path, func(tx *bolt.Tx) error {
				return tx.Bucket([]byte("meta")).Put([]byte("schema"), binary.BigEndian.AppendUint64(nil, 99))
			})
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := filepath.Join(t.TempDir(), store.FileName)
			tt.make(t, path)
			s, err := store.Open(path, store.Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, store.ErrCorrupt) {
				t.Fatalf("Open: %v, want ErrCorrupt", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "store: "+path+" is corrupt (") || !strings.HasSuffix(msg, "): move it aside to start empty: mv "+path+" "+path+".corrupt") || strings.Contains(msg, "\n") {
				t.Errorf("error message: %s", msg)
			}
			t.Log(msg)
			// The failed Open released the lock: moving the file aside works.
			if err := os.Rename(path, path+".corrupt"); err != nil {
				t.Fatal(err)
			}
			openStore(t, path, store.Options{Timeout: 10 * time.Millisecond})
		})
	}
}

func TestOpenNotADirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	writeFile(t, file, nil)
	_, err := store.Open(filepath.Join(file, store.FileName), store.Options{})
	if err == nil || errors.Is(err, store.ErrCorrupt) || errors.Is(err, store.ErrLocked) {
		t.Errorf("Open under a file: %v, want a plain I/O error", err)
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func truncate(t *testing.T, path string, size func(int64) int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size(fi.Size())); err != nil {
		t.Fatal(err)
	}
}

// crashEnv makes the test binary act as the child of TestCrashAfterApply.
const crashEnv = "INFERA_STORE_CRASH_CHILD"

// TestCrashAfterApply writes from a child process that SIGKILLs itself right
// after its last Apply returns, then checks every committed Apply is there.
func TestCrashAfterApply(t *testing.T) {
	if path := os.Getenv(crashEnv); path != "" {
		crashChild(path)
		return
	}
	path := filepath.Join(t.TempDir(), store.FileName)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashAfterApply$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnv+"="+path)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("child: %v, want killed\n%s", err, out)
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child: %v, want SIGKILL\n%s", err, out)
	}
	s := openStore(t, path, store.Options{})
	want := map[string]stored{
		"a": {"A2", 2, 3, "test.yaml"},
		"c": {"C", 1, 2, "test.yaml"},
		"d": {"D", 1, 3, "test.yaml"},
	}
	if got := snapshot(t, s); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("state after crash = %v, want %v", got, want)
	}
	if s.Revision() != 3 {
		t.Errorf("revision after crash = %d, want 3", s.Revision())
	}
}

func crashChild(path string) {
	s, err := store.Open(path, store.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	ctx := context.Background()
	steps := []struct {
		puts    []store.Object
		deletes []store.Key
	}{
		{puts: []store.Object{secret("a", "A"), secret("b", "B")}},
		{puts: []store.Object{secret("c", "C")}, deletes: []store.Key{secret("b", "").Key}},
		{puts: []store.Object{secret("a", "A2"), secret("d", "D")}},
	}
	for _, st := range steps {
		if _, _, err := s.Apply(ctx, st.puts, st.deletes); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(4)
		}
	}
	// A failed Apply must leave nothing behind either.
	if _, _, err := s.Apply(ctx, []store.Object{secret("e", "E")}, []store.Key{secret("missing", "").Key}); !errors.Is(err, store.ErrNotFound) {
		fmt.Fprintln(os.Stderr, "failing Apply:", err)
		os.Exit(5)
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}
