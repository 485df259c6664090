package modelcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// LocalSource is a directory on this machine: local:///dir, an absolute path (a NAS mount) or
// a claim the caller resolved (pvc://claim/sub). Its files are served in place from Dir; the
// cache never copies them. Its ETags are the files' modification times and sizes, so a
// rewritten file reads as changed.
type LocalSource struct {
	dir string
}

// NewLocalSource returns the Source of the absolute directory dir. It does no I/O: a NAS that
// is not mounted yet shows as ErrNotFound from List.
func NewLocalSource(dir string) (*LocalSource, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("modelcache: local source %q: not an absolute path", dir)
	}
	return &LocalSource{dir: filepath.Clean(dir)}, nil
}

// Dir is the directory the files are served from.
func (s *LocalSource) Dir() string { return s.dir }

func (s *LocalSource) String() string { return "local://" + filepath.ToSlash(s.dir) }

// List walks the directory: regular files and symbolic links to regular files (a Hugging Face
// snapshot links to its blobs); links to directories are not followed.
func (s *LocalSource) List(ctx context.Context) ([]Object, error) {
	var objs []Object
	err := filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(s.dir, p)
		if err != nil {
			return err
		}
		info, err := os.Stat(p) // follows a link
		if err != nil || !info.Mode().IsRegular() {
			return nil // a dangling link or a special file: not a model file
		}
		objs = append(objs, localObject(filepath.ToSlash(rel), info))
		return nil
	})
	if err != nil {
		return nil, s.err("list", "", err)
	}
	slices.SortFunc(objs, func(a, b Object) int { return strings.Compare(a.Key, b.Key) })
	return objs, nil
}

func (s *LocalSource) Stat(ctx context.Context, key string) (Object, error) {
	p, err := s.path(key)
	if err != nil {
		return Object{}, s.err("stat", key, err)
	}
	info, err := os.Stat(p)
	if err == nil && !info.Mode().IsRegular() {
		err = fs.ErrNotExist
	}
	if err != nil {
		return Object{}, s.err("stat", key, err)
	}
	return localObject(key, info), nil
}

func (s *LocalSource) ReadRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, s.err("read", key, err)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, s.err("read", key, err)
	}
	if n < 0 {
		n = 1<<63 - 1 - off
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, off, n), f}, nil
}

// path is key's file name, for a key that stays inside the directory.
func (s *LocalSource) path(key string) (string, error) {
	if !localKey(key) {
		return "", fmt.Errorf("invalid key: %w", fs.ErrNotExist)
	}
	return filepath.Join(s.dir, filepath.FromSlash(key)), nil
}

func (s *LocalSource) err(op, key string, err error) error {
	what := s.String() + ": " + op
	if key != "" {
		what += " " + strconv.Quote(key)
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s: %w: %w", what, ErrNotFound, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s: %w: %w", what, ErrAccessDenied, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func localObject(key string, info fs.FileInfo) Object {
	return Object{
		Key:     key,
		Size:    info.Size(),
		ETag:    strconv.FormatInt(info.ModTime().UnixNano(), 16) + "-" + strconv.FormatInt(info.Size(), 16),
		ModTime: info.ModTime(),
	}
}
