package modelcache_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/infera-dev/infera/internal/fluid"
	"github.com/infera-dev/infera/internal/modelcache"
)

// TestLocalSource lists and reads a directory served in place.
func TestLocalSource(t *testing.T) {
	checkFetchLeaks(t)
	dir := t.TempDir()
	write := func(rel, content string) {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("unet/model.safetensors", "unet weights")
	write("model_index.json", "{}")
	write("blobs/abc", "blob")
	if err := os.MkdirAll(filepath.Join(dir, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, l := range []struct{ target, name string }{
		{"blobs/abc", "linked.bin"}, // a file link: listed
		{"unet", "unet-link"},       // a directory link: not followed
		{"nothere", "dangling"},     // listed by nobody
	} {
		if err := os.Symlink(filepath.Join(dir, l.target), filepath.Join(dir, l.name)); err != nil {
			t.Fatal(err)
		}
	}

	for _, mp := range []string{"local://" + dir, dir, dir + "/"} {
		t.Run(mp, func(t *testing.T) {
			src, err := modelcache.NewSource(fluid.Mount{MountPoint: mp}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			local, ok := src.(modelcache.Local)
			if !ok || local.Dir() != dir {
				t.Fatalf("NewSource(%q) = %T, want a Local source of %s", mp, src, dir)
			}
			if src.String() != "local://"+dir {
				t.Errorf("String() = %q", src.String())
			}
			ctx := context.Background()
			objs, err := src.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, o := range objs {
				keys = append(keys, o.Key)
			}
			if want := []string{"blobs/abc", "linked.bin", "model_index.json", "unet/model.safetensors"}; !slices.Equal(keys, want) {
				t.Errorf("List keys %q, want %q", keys, want)
			}
			obj := stat(t, src, "unet/model.safetensors")
			if obj.Size != int64(len("unet weights")) || obj.ETag == "" {
				t.Errorf("Stat = %+v", obj)
			}
			rc, err := src.ReadRange(ctx, "unet/model.safetensors", 5, 3)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || string(got) != "wei" {
				t.Errorf("ReadRange(5, 3) = %q, %v; want %q", got, err, "wei")
			}
			for _, key := range []string{"../outside", "/etc/passwd", "unet/../model_index.json", "nothere", "empty", "dangling"} {
				if _, err := src.Stat(ctx, key); !errors.Is(err, modelcache.ErrNotFound) {
					t.Errorf("Stat(%q): %v, want ErrNotFound", key, err)
				}
			}
		})
	}

	gone, err := modelcache.NewLocalSource(filepath.Join(dir, "not-mounted"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gone.List(context.Background()); !errors.Is(err, modelcache.ErrNotFound) {
		t.Errorf("List of a missing directory: %v, want ErrNotFound", err)
	}
	if _, err := modelcache.NewLocalSource("relative/dir"); err == nil {
		t.Error("NewLocalSource of a relative path succeeded")
	}
}
