package store_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/infera-dev/infera/internal/store"
)

// benchData is the size of a typical Knative Service's canonical JSON.
var benchData = make([]byte, 2048)

// BenchmarkApply commits 10 changed objects per Apply (one fsync'd bbolt
// transaction), with one watcher following along.
func BenchmarkApply(b *testing.B) {
	s := newStore(b, store.Options{})
	ctx := b.Context()
	ch, err := s.Watch(ctx, 0)
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for range ch {
		}
	}()
	puts := make([]store.Object, 10)
	for i := range puts {
		puts[i] = store.Object{
			Key:        store.Key{Group: "serving.knative.dev", Kind: "Service", Namespace: "default", Name: fmt.Sprint("svc-", i)},
			APIVersion: "serving.knative.dev/v1",
			Source:     "bench.yaml",
		}
	}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n++
		for i := range puts {
			puts[i].Data = fmt.Appendf(benchData[:0:0], "%d %s", n, benchData)
		}
		if _, _, err := s.Apply(ctx, puts, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGet(b *testing.B) {
	s := newStore(b, store.Options{})
	const n = 1000
	puts := make([]store.Object, n)
	for i := range puts {
		puts[i] = store.Object{
			Key:        store.Key{Group: "serving.knative.dev", Kind: "Service", Namespace: "default", Name: fmt.Sprint("svc-", i)},
			APIVersion: "serving.knative.dev/v1",
			Data:       benchData,
		}
	}
	if _, _, err := s.Apply(context.Background(), puts, nil); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.Get(puts[i%n].Key); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
