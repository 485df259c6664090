package store_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/infera-dev/infera/internal/store"
)

func openStore(t testing.TB, path string, opts store.Options) *store.Store {
	t.Helper()
	s, err := store.Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func newStore(t testing.TB, opts store.Options) *store.Store {
	t.Helper()
	return openStore(t, filepath.Join(t.TempDir(), store.FileName), opts)
}

func secret(name, data string) store.Object {
	return store.Object{
		Key:        store.Key{Kind: "Secret", Namespace: "default", Name: name},
		APIVersion: "v1",
		Data:       []byte(data),
		Source:     "test.yaml",
	}
}

func mustApply(t testing.TB, s *store.Store, puts []store.Object, deletes []store.Key) uint64 {
	t.Helper()
	_, rev, err := s.Apply(context.Background(), puts, deletes)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return rev
}

func TestKeyString(t *testing.T) {
	tests := []struct {
		key  store.Key
		want string
	}{
		{store.Key{Group: "serving.knative.dev", Kind: "Service", Namespace: "default", Name: "sd-backend"}, "Service.serving.knative.dev default/sd-backend"},
		{store.Key{Kind: "Secret", Namespace: "default", Name: "access-key"}, "Secret default/access-key"},
		{store.Key{Group: "scheduling.alibabacloud.com", Kind: "ResourcePolicy", Name: "gpu"}, "ResourcePolicy.scheduling.alibabacloud.com gpu"},
	}
	for _, tt := range tests {
		if got := tt.key.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.key, got, tt.want)
		}
	}
}

// stored is the part of an Object the Apply table checks.
type stored struct {
	data       string
	generation int64
	revision   uint64
	source     string
}

func snapshot(t *testing.T, s *store.Store) map[string]stored {
	t.Helper()
	objs, err := s.List("", "", "")
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	m := make(map[string]stored, len(objs))
	for _, o := range objs {
		m[o.Key.Name] = stored{string(o.Data), o.Generation, o.Revision, o.Source}
	}
	return m
}

var errAny = errors.New("any error")

func TestApply(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	key := func(name string) store.Key { return secret(name, "").Key }
	moved := secret("a", "A")
	moved.Source = "elsewhere.yaml"
	v2 := secret("a", "A")
	v2.APIVersion = "v2"
	noKind := secret("x", "X")
	noKind.Key.Kind = ""
	nul := secret("x\x00y", "X")
	// Every case starts from a = "A", b = "B", d = "D", all created at revision 1.
	seed := map[string]stored{"a": {"A", 1, 1, "test.yaml"}, "b": {"B", 1, 1, "test.yaml"}, "d": {"D", 1, 1, "test.yaml"}}
	with := func(name string, st stored) map[string]stored {
		m := maps.Clone(seed)
		m[name] = st
		return m
	}
	without := func(name string) map[string]stored {
		m := maps.Clone(seed)
		delete(m, name)
		return m
	}
	tests := []struct {
		name        string
		ctx         context.Context // nil: Background
		puts        []store.Object
		deletes     []store.Key
		wantChanges []string // "name action generation"
		wantRev     uint64
		wantErr     error // errors.Is target, or errAny
		wantState   map[string]stored
	}{{
		name:        "create",
		puts:        []store.Object{secret("c", "C")},
		wantChanges: []string{"c created 1"},
		wantRev:     2,
		wantState:   with("c", stored{"C", 1, 2, "test.yaml"}),
	}, {
		name:        "changed data configures and bumps generation",
		puts:        []store.Object{secret("a", "A2")},
		wantChanges: []string{"a configured 2"},
		wantRev:     2,
		wantState:   with("a", stored{"A2", 2, 2, "test.yaml"}),
	}, {
		name:        "same data from another source is a no-op",
		puts:        []store.Object{moved, secret("b", "B")},
		wantChanges: []string{"a unchanged 1", "b unchanged 1"},
		wantRev:     1,
		wantState:   seed,
	}, {
		name:        "apiVersion change configures",
		puts:        []store.Object{v2},
		wantChanges: []string{"a configured 2"},
		wantRev:     2,
		wantState:   with("a", stored{"A", 2, 2, "test.yaml"}),
	}, {
		name:        "delete",
		deletes:     []store.Key{key("a")},
		wantChanges: []string{"a deleted 1"},
		wantRev:     2,
		wantState:   without("a"),
	}, {
		name:        "mixed, puts then deletes in order, one revision",
		puts:        []store.Object{secret("c", "C"), secret("a", "A"), secret("b", "B3")},
		deletes:     []store.Key{key("d")},
		wantChanges: []string{"c created 1", "a unchanged 1", "b configured 2", "d deleted 1"},
		wantRev:     2,
		wantState:   map[string]stored{"a": seed["a"], "b": {"B3", 2, 2, "test.yaml"}, "c": {"C", 1, 2, "test.yaml"}},
	}, {
		name:    "deleting a missing key applies nothing",
		puts:    []store.Object{secret("c", "C"), secret("b", "B3")},
		deletes: []store.Key{key("d"), key("missing")},
		wantErr: store.ErrNotFound, wantRev: 1, wantState: seed,
	}, {
		name:    "duplicate put",
		puts:    []store.Object{secret("c", "C"), secret("c", "C2")},
		wantErr: errAny, wantRev: 1, wantState: seed,
	}, {
		name:    "put and delete of one key",
		puts:    []store.Object{secret("a", "A2")},
		deletes: []store.Key{key("a")},
		wantErr: errAny, wantRev: 1, wantState: seed,
	}, {
		name:    "empty kind",
		puts:    []store.Object{secret("c", "C"), noKind},
		wantErr: errAny, wantRev: 1, wantState: seed,
	}, {
		name:    "empty name",
		deletes: []store.Key{key("")},
		wantErr: errAny, wantRev: 1, wantState: seed,
	}, {
		name:    "NUL in name",
		puts:    []store.Object{nul},
		wantErr: errAny, wantRev: 1, wantState: seed,
	}, {
		name:    "cancelled context",
		ctx:     cancelled,
		puts:    []store.Object{secret("c", "C")},
		wantErr: context.Canceled, wantRev: 1, wantState: seed,
	}, {
		name:    "empty apply",
		wantRev: 1, wantState: seed,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t, store.Options{})
			mustApply(t, s, []store.Object{secret("a", "A"), secret("b", "B"), secret("d", "D")}, nil)
			ctx := tt.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			changes, rev, err := s.Apply(ctx, tt.puts, tt.deletes)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("Apply: %v", err)
			case tt.wantErr == errAny && err == nil, tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Fatalf("Apply error = %v, want %v", err, tt.wantErr)
			case err == nil:
				var got []string
				for _, c := range changes {
					got = append(got, fmt.Sprintf("%s %s %d", c.Key.Name, c.Action, c.Generation))
				}
				if !slices.Equal(got, tt.wantChanges) {
					t.Errorf("changes = %q, want %q", got, tt.wantChanges)
				}
				if rev != tt.wantRev {
					t.Errorf("returned revision = %d, want %d", rev, tt.wantRev)
				}
			}
			if got := s.Revision(); got != tt.wantRev {
				t.Errorf("Revision() = %d, want %d", got, tt.wantRev)
			}
			if got := snapshot(t, s); !maps.Equal(got, tt.wantState) {
				t.Errorf("state = %v, want %v", got, tt.wantState)
			}
		})
	}
}

func TestApplyErrorMessages(t *testing.T) {
	s := newStore(t, store.Options{})
	_, _, err := s.Apply(context.Background(), nil, []store.Key{{Group: "serving.knative.dev", Kind: "Service", Namespace: "default", Name: "gone"}})
	if want := "store: apply: delete Service.serving.knative.dev default/gone: not found"; err == nil || err.Error() != want {
		t.Errorf("error = %v, want %q", err, want)
	}
	_, err = s.Get(store.Key{Kind: "Secret", Namespace: "default", Name: "nope"})
	if want := "store: get Secret default/nope: not found"; !errors.Is(err, store.ErrNotFound) || err.Error() != want {
		t.Errorf("error = %v, want %q", err, want)
	}
}

func TestApplyCopiesData(t *testing.T) {
	s := newStore(t, store.Options{})
	obj := secret("a", "original")
	mustApply(t, s, []store.Object{obj}, nil)
	copy(obj.Data, "XXXXXXXX")
	got, err := s.Get(obj.Key)
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Data) != "original" {
		t.Errorf("stored Data = %q after the caller changed its slice", got.Data)
	}
	copy(got.Data, "YYYYYYYY")
	if again, _ := s.Get(obj.Key); string(again.Data) != "original" {
		t.Errorf("stored Data = %q after the caller changed a Get result", again.Data)
	}
}

func TestGet(t *testing.T) {
	s := newStore(t, store.Options{})
	obj := secret("a", `{"kind":"Secret"}`)
	obj.Source = "examples/x.yaml:3"
	mustApply(t, s, []store.Object{obj}, nil)
	mustApply(t, s, []store.Object{secret("b", "B")}, nil)
	got, err := s.Get(obj.Key)
	if err != nil {
		t.Fatal(err)
	}
	want := obj
	want.Generation, want.Revision = 1, 1
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Get = %+v, want %+v", got, want)
	}
	if _, err := s.Get(store.Key{Kind: "Secret", Namespace: "other", Name: "a"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get of a missing key: %v, want ErrNotFound", err)
	}
}

func TestList(t *testing.T) {
	s := newStore(t, store.Options{})
	obj := func(group, kind, ns, name string) store.Object {
		return store.Object{Key: store.Key{Group: group, Kind: kind, Namespace: ns, Name: name}, Data: []byte("{}")}
	}
	// Applied out of order; List sorts by (Group, Kind, Namespace, Name).
	mustApply(t, s, []store.Object{
		obj("serving.knative.dev", "Service", "default", "b"),
		obj("", "Secret", "default", "s"),
		obj("serving.knative.dev", "Service", "default", "a"),
		obj("data.fluid.io", "Dataset", "default", "d"),
		obj("serving.knative.dev", "Service", "team", "a"),
		obj("serving.knative.dev", "Route", "default", "a"),
		obj("", "ConfigMap", "knative-serving", "config-network"),
		obj("serving", "Service", "default", "prefix-of-group"),
		obj("scheduling.alibabacloud.com", "ResourcePolicy", "", "cluster-wide"),
	}, nil)
	tests := []struct {
		group, kind, ns string
		want            []string
	}{
		{"", "", "", []string{
			"ConfigMap knative-serving/config-network", "Secret default/s",
			"Dataset.data.fluid.io default/d", "ResourcePolicy.scheduling.alibabacloud.com cluster-wide",
			"Service.serving default/prefix-of-group",
			"Route.serving.knative.dev default/a", "Service.serving.knative.dev default/a",
			"Service.serving.knative.dev default/b", "Service.serving.knative.dev team/a"}},
		{"serving.knative.dev", "Service", "", []string{
			"Service.serving.knative.dev default/a", "Service.serving.knative.dev default/b", "Service.serving.knative.dev team/a"}},
		{"serving.knative.dev", "Service", "team", []string{"Service.serving.knative.dev team/a"}},
		{"serving.knative.dev", "", "default", []string{
			"Route.serving.knative.dev default/a", "Service.serving.knative.dev default/a", "Service.serving.knative.dev default/b"}},
		{"", "Service", "default", []string{
			"Service.serving default/prefix-of-group", "Service.serving.knative.dev default/a", "Service.serving.knative.dev default/b"}},
		{"", "", "knative-serving", []string{"ConfigMap knative-serving/config-network"}},
		{"serving", "", "", []string{"Service.serving default/prefix-of-group"}},
		{"nope", "", "", nil},
		{"serving.knative.dev", "Nope", "", nil},
	}
	for _, tt := range tests {
		objs, rev, err := s.ListWithRevision(tt.group, tt.kind, tt.ns)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, o := range objs {
			got = append(got, o.Key.String())
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("List(%q, %q, %q) = %q, want %q", tt.group, tt.kind, tt.ns, got, tt.want)
		}
		if rev != 1 {
			t.Errorf("ListWithRevision revision = %d, want 1", rev)
		}
	}
}

func TestClosed(t *testing.T) {
	s, err := store.Open(filepath.Join(t.TempDir(), store.FileName), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	k := secret("a", "A").Key
	mustApply(t, s, []store.Object{secret("a", "A")}, nil)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	_, _, applyErr := s.Apply(context.Background(), []store.Object{secret("b", "B")}, nil)
	_, getErr := s.Get(k)
	_, listErr := s.List("", "", "")
	_, watchErr := s.Watch(context.Background(), 1)
	for op, err := range map[string]error{"Apply": applyErr, "Get": getErr, "List": listErr, "Watch": watchErr} {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", op, err)
		}
	}
}

// TestConcurrent runs writers, readers and a watcher at once (under -race)
// and checks the watcher sees every revision once, in order.
func TestConcurrent(t *testing.T) {
	const writers, applies = 4, 25
	s := newStore(t, store.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := s.Watch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	fail := func(err error) {
		t.Error(err)
		cancel() // end the watch loop below
	}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range applies {
				obj := secret(fmt.Sprintf("w%d-%d", w, i), "x")
				shared := secret("shared", fmt.Sprintf("w%d-%d", w, i))
				if _, _, err := s.Apply(context.Background(), []store.Object{obj, shared}, nil); err != nil {
					fail(err)
					return
				}
				if _, err := s.Get(obj.Key); err != nil {
					fail(err)
				}
				if _, err := s.List("", "Secret", "default"); err != nil {
					fail(err)
				}
			}
		})
	}
	var last uint64
	seen := 0
	for ev := range ch {
		seen++
		if ev.Revision != last && ev.Revision != last+1 {
			t.Fatalf("event revision %d after %d", ev.Revision, last)
		}
		last = ev.Revision
		if seen == 2*writers*applies {
			break
		}
	}
	wg.Wait()
	if last != writers*applies || s.Revision() != last {
		t.Errorf("last event revision %d, store revision %d, want %d", last, s.Revision(), writers*applies)
	}
	shared, err := s.Get(secret("shared", "").Key)
	if err != nil {
		t.Fatal(err)
	}
	if shared.Generation != writers*applies {
		t.Errorf("shared generation = %d, want %d", shared.Generation, writers*applies)
	}
}

func TestDefaultDir(t *testing.T) {
	tests := []struct {
		xdg, home, want string
	}{
		{"/xdg/state", "/home/u", "/xdg/state/infera"},
		{"", "/home/u", "/home/u/.local/state/infera"},
		{"relative/ignored", "/home/u", "/home/u/.local/state/infera"},
	}
	for _, tt := range tests {
		t.Setenv("XDG_STATE_HOME", tt.xdg)
		t.Setenv("HOME", tt.home)
		if got := store.DefaultDir(); got != tt.want {
			t.Errorf("XDG_STATE_HOME=%q HOME=%q: DefaultDir() = %q, want %q", tt.xdg, tt.home, got, tt.want)
		}
	}
	t.Setenv("XDG_STATE_HOME", "")
	t.Setenv("HOME", "")
	if got := store.DefaultDir(); got == "" || !filepath.IsAbs(got) || !strings.Contains(got, "infera") {
		t.Errorf("with no home: DefaultDir() = %q", got)
	}
}
