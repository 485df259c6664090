//go:build !linux

package lazymount

import (
	"errors"
	"fmt"
)

// New needs Linux: it mounts with mount(2) itself, and unmounts through fusectl.
func New(dir string, tree []File, b Backing, opts Options) (*Mount, error) {
	if _, err := checkTree(tree); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("lazymount: mount %s: %w: needs Linux", dir, ErrNoFUSE)
}

func (m *Mount) close() error { return errors.ErrUnsupported }

func (m *Mount) detachDir() error { return errors.ErrUnsupported }
