package manifest

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// MaxSourceBytes bounds one input file (or standard input). Manifests are small; a larger input
// is refused before it is parsed, so a stray model file or a hostile input cannot exhaust memory.
const MaxSourceBytes = 8 << 20

// ErrTooLarge is wrapped by the error for an input over MaxSourceBytes.
var ErrTooLarge = errors.New("input too large")

// Source is one named input: a file, or "-" for standard input.
type Source struct {
	Name string
	Data []byte
}

// ReadSources reads every FILE, DIR (walked for .yaml and .yml files, in lexical order) or "-"
// (stdin) named in paths.
func ReadSources(paths []string, stdin io.Reader) ([]Source, error) {
	var out []Source
	for _, p := range paths {
		if p == "-" {
			data, err := readLimited(stdin, "<stdin>")
			if err != nil {
				return nil, err
			}
			out = append(out, Source{Name: "<stdin>", Data: data})
			continue
		}
		info, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("manifest: %w", err)
		}
		if !info.IsDir() {
			src, err := readFile(p)
			if err != nil {
				return nil, err
			}
			out = append(out, src)
			continue
		}
		var files []string
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && path != p && strings.HasPrefix(d.Name(), ".") {
				return filepath.SkipDir
			}
			if ext := filepath.Ext(path); !d.IsDir() && (ext == ".yaml" || ext == ".yml") {
				files = append(files, path)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("manifest: walk %s: %w", p, err)
		}
		if len(files) == 0 {
			return nil, fmt.Errorf("manifest: %s: no .yaml or .yml files in the directory", p)
		}
		sort.Strings(files)
		for _, f := range files {
			src, err := readFile(f)
			if err != nil {
				return nil, err
			}
			out = append(out, src)
		}
	}
	return out, nil
}

func readFile(path string) (Source, error) {
	f, err := os.Open(path)
	if err != nil {
		return Source{}, fmt.Errorf("manifest: %w", err)
	}
	defer f.Close()
	data, err := readLimited(f, path)
	if err != nil {
		return Source{}, err
	}
	return Source{Name: path, Data: data}, nil
}

func readLimited(r io.Reader, name string) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSourceBytes+1))
	if err != nil {
		return nil, fmt.Errorf("manifest: read %s: %w", name, err)
	}
	if len(data) > MaxSourceBytes {
		return nil, fmt.Errorf("manifest: %s: %w: larger than the %d MiB limit for one manifest file", name, ErrTooLarge, MaxSourceBytes>>20)
	}
	return data, nil
}
