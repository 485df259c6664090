package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
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

func TestApply(t *testing.T) {
	ctx := context.Background()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	key := func(name string) store.Key { return secret(name, "").Key }
	moved := secret("a", "A")
	moved.Source = "elsewhere.yaml"
	v2 := secret("a", "A")
	v2.APIVersion = "v2"
	// Every case starts from a = "A", b = "B", both created at revision 1.
	seed := map[string]stored{"a": {"A", 1, 1, "test.yaml"}, "b": {"B", 1, 1, "test.yaml"}}
	tests := []struct {
		name        string
		ctx         context.Context
		puts        []store.Object
		deletes     []store.Key
		wantChanges []string // "name action generation"
		wantRev     uint64
		wantErr     error // errors.Is target; errAny for any error
		wantState   map[string]stored
	}{{
		name:        "create",
		puts:        []store.Object{secret("c", "C")},
		wantChanges: []string{"c created 1"},
		wantRev:     2,
		wantState:   map[string]stored{"a": seed["a"], "b": seed["b"], "c": {"C", 1, 2, "test.yaml"}},
	}, {
		name:        "changed data configures and bumps generation",
		puts:        []store.Object{secret("a", "A2")},
		wantChanges: []string{"a configured 2"},
		wantRev:     2,
		wantState:   map[string]stored{"a": {"A2", 2, 2, "test.yaml"}, "b": seed["b"]},
	}, {
		name:        "same data from another source is unchanged",
		puts:        []store.Object{moved, secret("b", "B")},
		wantChanges: []string{"a unchanged 1", "b unchanged 1"},
		wantRev:     1,
		wantState:   seed,
	}, {
		name:        "apiVersion change configures",
		puts:        []store.Object{v2},
		wantChanges: []string{"a configured 2"},
		wantRev:     2,
		wantState:   map[string]stored{"a": {"A", 2, 2, "test.yaml"}, "b": seed["b"]},
	}, {
		name:        "delete",
		deletes:     []store.Key{key("a")},
		wantChanges: []string{"a deleted 1"},
		wantRev:     2,
		wantState:   map[string]stored{"b": seed["b"]},
	}, {
		name:        "mixed, in order puts then deletes",
		puts:        []store.Object{secret("c", "C"), secret("a", "A"), secret("b", "B3")},
		deletes:     []store.Key{key("a0")[:0:0][0:0:0][0], key("a")},
		wantChanges: nil,
	}}
	_ = tests
	_ = cancelled
	_ = errors.Is
	_ = fmt.Sprint
}
