//go:build linux

package lazymount

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestCheckDevice(t *testing.T) {
	plain := filepath.Join(t.TempDir(), "fuse")
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{devFuse, true}, // the tests need it: they fail, not skip, without it
		{filepath.Join(t.TempDir(), "missing"), false},
		{plain, false},
		{"/dev/null", false},
	} {
		err := checkDevice(tc.path)
		if tc.ok && err != nil {
			t.Errorf("checkDevice(%s): %v", tc.path, err)
		}
		if !tc.ok && !errors.Is(err, ErrNoFUSE) {
			t.Errorf("checkDevice(%s): %v, want ErrNoFUSE", tc.path, err)
		}
	}
}
