//go:build !cgo

package gpu

import (
	"log/slog"
	"slices"
	"testing"
)

func TestOpenAutoWithoutCgo(t *testing.T) {
	logs := &recorder{}
	inv, err := Open("auto", slog.New(logs))
	if err != nil {
		t.Fatal(err)
	}
	if inv.Source() != SourceNone {
		t.Fatalf("Source() = %q, want %q", inv.Source(), SourceNone)
	}
	want := []string{"INFO built without cgo: NVML unavailable: " + declareHint}
	if got := logs.messages(); !slices.Equal(got, want) {
		t.Fatalf("logged %q, want %q", got, want)
	}
}
