package layering

import (
	"encoding/json"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/infera-dev/infera"

type pkg struct {
	ImportPath string
	Imports    []string // direct
	Deps       []string // transitive
	Standard   bool
}

func listPackages(t *testing.T) map[string]*pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-json=ImportPath,Imports,Deps,Standard", module+"/...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]*pkg{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		p := &pkg{}
		if err := dec.Decode(p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs[p.ImportPath] = p
	}
	if pkgs[module+"/internal/platform"] == nil {
		t.Fatal("go list did not list internal/platform")
	}
	return pkgs
}

func internal(name string) string { return module + "/internal/" + name }

// own is p and the infera packages it depends on.
func own(pkgs map[string]*pkg, p *pkg) []*pkg {
	out := []*pkg{p}
	for _, d := range p.Deps {
		if strings.HasPrefix(d, module+"/") {
			out = append(out, pkgs[d])
		}
	}
	return out
}

func TestPoliciesArePure(t *testing.T) {
	pkgs := listPackages(t)
	forbidden := []string{"net", "net/http", "os/exec", "go.etcd.io/bbolt"}
	for _, name := range []string{"autoscaler", "reconciler", "simulate", "eviction", "placement"} {
		p := pkgs[internal(name)]
		if p == nil {
			t.Errorf("policy package %s not found", name)
			continue
		}
		for _, q := range own(pkgs, p) {
			for _, imp := range q.Imports {
				if slices.Contains(forbidden, imp) {
					t.Errorf("policy %s depends on %s, which imports %s", name, q.ImportPath, imp)
				}
			}
		}
	}
}

func TestMechanismsIndependent(t *testing.T) {
	pkgs := listPackages(t)
	mechanisms := []string{"gateway", "supervisor", "store"}
	for _, a := range mechanisms {
		for _, b := range mechanisms {
			if a != b && slices.Contains(pkgs[internal(a)].Deps, internal(b)) {
				t.Errorf("%s imports %s: mechanisms at one level do not import each other", a, b)
			}
		}
	}
}

func TestImportersOf(t *testing.T) {
	pkgs := listPackages(t)
	rules := []struct {
		pkg     string
		allowed []string // the only packages that may import it (directly)
	}{
		{internal("platform"), []string{internal("cli")}},
		{internal("cli"), []string{module + "/cmd/infera"}},
	}
	for _, r := range rules {
		for _, p := range pkgs {
			if slices.Contains(p.Imports, r.pkg) && !slices.Contains(r.allowed, p.ImportPath) &&
				!strings.HasSuffix(p.ImportPath, ".test") && p.ImportPath != r.pkg+"_test" {
				t.Errorf("%s imports %s; only %v may", p.ImportPath, r.pkg, r.allowed)
			}
		}
	}
}

func TestNoUpwardImports(t *testing.T) {
	pkgs := listPackages(t)
	rules := []struct {
		pkg       string
		forbidden []string // may not depend on these, directly or not
	}{
		{internal("adminapi"), []string{internal("controller"), internal("platform"), internal("gateway"), internal("supervisor")}},
		{internal("controller"), []string{internal("platform"), internal("cli"), internal("gateway"), internal("supervisor")}},
		{internal("workload"), []string{module + "/"}},
		{internal("clock"), []string{module + "/"}},
	}
	for _, r := range rules {
		p := pkgs[r.pkg]
		if p == nil {
			t.Errorf("%s not found", r.pkg)
			continue
		}
		for _, d := range p.Deps {
			for _, f := range r.forbidden {
				if d == f || (strings.HasSuffix(f, "/") && strings.HasPrefix(d, f)) {
					t.Errorf("%s depends on %s", r.pkg, d)
				}
			}
		}
	}
}
