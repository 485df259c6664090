package supervisor

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/infera-dev/infera/internal/lazymount"
	"github.com/infera-dev/infera/internal/workload"
)

// gatedBacking serves one file from memory; reads past its first MiB wait for release, as a
// lazy dataset's reads wait for the fetch.
type gatedBacking struct {
	data    []byte
	release chan struct{}
	waiting chan struct{} // closed when a read first waits
	once    sync.Once
}

func (g *gatedBacking) ReadAt(ctx context.Context, _ string, p []byte, off int64) (int, error) {
	if off+int64(len(p)) > 1<<20 {
		g.once.Do(func() { close(g.waiting) })
		select {
		case <-g.release:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return copy(p, g.data[off:]), nil
}

// TestLazyMountAsVolume: a replica reads a model through a lazymount (the model cache's lazy
// dataset mount) given as a hostPath volume, in the bubblewrap sandbox (--ro-bind of the mount
// point) and without one (INFERA_VOLUME_<NAME>). Infera mounts as root and runs replicas as
// itself, with no user namespace (bwrap gets --unshare-user only when not root), so the mount
// needs no allow_other.
func TestLazyMountAsVolume(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a lazymount needs root")
	}
	for _, sb := range []string{SandboxBwrap, SandboxNone} {
		t.Run(sb, func(t *testing.T) {
			if sb == SandboxBwrap {
				needBwrap(t)
			}
			data := bytes.Repeat([]byte("weights!"), 3<<17) // 3 MiB
			g := &gatedBacking{data: data, release: make(chan struct{}), waiting: make(chan struct{})}
			dir := t.TempDir()
			m, err := lazymount.New(dir, []lazymount.File{{Path: "llm/model.bin", Size: int64(len(data))}}, g, lazymount.DefaultOptions())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := m.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			})
			ts := newTestSup(t, Config{Sandbox: sb})
			rev := testRev("lazy" + sb[:1] + "-00001")
			rev.Volumes = []workload.Volume{{Name: "models", Kind: workload.VolumeHostPath, HostPath: dir, MountPath: "/models", ReadOnly: true}}
			r := ts.waitReady(t, rev, 1)[0]
			path := "/models/llm/model.bin"
			if sb == SandboxNone {
				_, body := get(t, r.Port, "/env")
				var env map[string]string
				if err := json.Unmarshal([]byte(body), &env); err != nil {
					t.Fatal(err)
				}
				if env["INFERA_VOLUME_MODELS"] != dir {
					t.Fatalf("INFERA_VOLUME_MODELS = %q, want %s", env["INFERA_VOLUME_MODELS"], dir)
				}
				path = filepath.Join(dir, "llm", "model.bin")
			}
			type result struct {
				code int
				body string
			}
			got := make(chan result, 1)
			go func() {
				code, body := get(t, r.Port, "/file?path="+path)
				got <- result{code, body}
			}()
			<-g.waiting // the replica's read waits on the bytes not fetched yet
			select {
			case res := <-got:
				t.Fatalf("read returned before its bytes were there: %d %.80q", res.code, res.body)
			default:
			}
			close(g.release)
			res := <-got
			if res.code != 200 || res.body != string(data) {
				t.Errorf("GET %s: %d, %d bytes; want 200 and the %d bytes of the model", path, res.code, len(res.body), len(data))
			}
			if sb != SandboxBwrap {
				return
			}
			// Detached from the host's directory (the model cache does so once the dataset is
			// Ready), the mount still serves the sandbox's copy of it.
			if err := m.Detach(); err != nil {
				t.Fatal(err)
			}
			if code, body := get(t, r.Port, "/file?path="+path); code != 200 || body != string(data) {
				t.Errorf("GET %s after Detach: %d, %d bytes; want the model", path, code, len(body))
			}
		})
	}
}
