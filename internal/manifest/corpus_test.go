package manifest

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// loadFiles loads the named files as one set, each source named by its base name so that
// expected messages do not depend on where the repository is checked out.
func loadFiles(t *testing.T, paths ...string) *Set {
	t.Helper()
	var sources []Source
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		sources = append(sources, Source{Name: filepath.Base(p), Data: data})
	}
	return Load(context.Background(), sources, Options{})
}

func render(ps Problems) string {
	var b strings.Builder
	for _, p := range ps {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// TestBadCorpus loads every testdata/bad document set on its own and compares every problem it
// reports (errors and warnings, with positions) with the expected-error table
// testdata/bad/expected.txt. Each set must have at least one error.
func TestBadCorpus(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 40 {
		t.Fatalf("the bad corpus has %d files, want at least 40", len(files))
	}
	var got strings.Builder
	for _, f := range files {
		set := loadFiles(t, f)
		if len(set.Problems.Errors()) == 0 {
			t.Errorf("%s: no error reported; problems:\n%s", f, render(set.Problems))
		}
		fmt.Fprintf(&got, "== %s\n%s", filepath.Base(f), render(set.Problems))
	}
	compareGolden(t, "testdata/bad/expected.txt", got.String())
}

// TestGoodCorpus checks that every testdata/good file validates without error and that its
// defaulted objects print as the golden YAML next to it.
func TestGoodCorpus(t *testing.T) {
	files, err := filepath.Glob("testdata/good/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, ".golden.yaml") {
			continue
		}
		t.Run(filepath.Base(f), func(t *testing.T) {
			set := loadFiles(t, f)
			if err := set.Problems.Err(); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := Print(&out, set.Documents, "yaml"); err != nil {
				t.Fatal(err)
			}
			compareGolden(t, strings.TrimSuffix(f, ".yaml")+".golden.yaml", out.String())
		})
	}
}

// TestExamples checks that every example under examples/ (the reference article's YAML, made
// concrete) validates as one set without error, and that the warnings are the expected ones.
func TestExamples(t *testing.T) {
	var files []string
	err := filepath.Walk("../../examples", func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && (filepath.Ext(p) == ".yaml" || filepath.Ext(p) == ".yml") {
			files = append(files, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	set := loadFiles(t, files...)
	if err := set.Problems.Err(); err != nil {
		t.Fatal(err)
	}
	for _, w := range set.Problems.Warnings() {
		if !strings.Contains(w.Message, "Kubernetes default value is insecure") &&
			!strings.Contains(w.Message, "kubectl rejects it") &&
			!strings.Contains(w.Message, "no effect on an ImageCache") {
			t.Errorf("unexpected warning: %s", w)
		}
	}
}

func compareGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run %s -update to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s differs from what the code produces (go test -update rewrites it):\n%s", path, lineDiff(string(want), got))
	}
}

// lineDiff lists the lines only in want (-) and only in got (+).
func lineDiff(want, got string) string {
	count := map[string]int{}
	for _, l := range strings.Split(got, "\n") {
		count[l]++
	}
	var b strings.Builder
	for _, l := range strings.Split(want, "\n") {
		if count[l] > 0 {
			count[l]--
			continue
		}
		fmt.Fprintf(&b, "- %s\n", l)
	}
	for _, l := range strings.Split(got, "\n") {
		if count[l] > 0 {
			count[l]--
			fmt.Fprintf(&b, "+ %s\n", l)
		}
	}
	return b.String()
}
