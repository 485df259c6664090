package modelcache_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/bits"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/infera-dev/infera/internal/modelcache"
)

// TestJournalTrust resumes from journals as a reboot or a torn write leaves them: after a
// reboot only the chunks fsync'd before it are kept; an unreadable journal starts over.
func TestJournalTrust(t *testing.T) {
	checkFetchLeaks(t)
	const chunk, chunks = 4096, 64
	data := randomBytes(chunk*chunks, 17)
	src := &memSource{key: "j.bin", data: data, etag: "v1", sums: map[string]string{"crc32c": hexSum("crc32c", data)}}
	f := modelcache.Fetcher{ChunkSize: chunk, Streams: 2}
	for _, tc := range []struct {
		name   string
		mangle func(t *testing.T, journal map[string]any) // nil: write garbage
		want   func(journal map[string]any) int64         // bytes kept
	}{
		{"same boot", func(*testing.T, map[string]any) {}, func(j map[string]any) int64 { return chunk * ones(j["done"]) }},
		{"after a reboot", func(_ *testing.T, j map[string]any) { j["boot"] = "another-boot" },
			func(j map[string]any) int64 { return chunk * ones(j["synced"]) }},
		{"other object", func(_ *testing.T, j map[string]any) { j["etag"] = "v0" }, func(map[string]any) int64 { return 0 }},
		{"torn", nil, func(map[string]any) int64 { return 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "j.bin")
			ctx, cancel := context.WithCancel(context.Background())
			var landed atomic.Int64
			err := f.Fetch(ctx, src, modelcache.Object{Key: "j.bin"}, dst, func(d int64) {
				if landed.Add(d) >= 40*chunk { // past one fsync (every 16 chunks)
					cancel()
				}
			})
			cancel()
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled Fetch: %v", err)
			}
			raw, err := os.ReadFile(dst + ".journal")
			if err != nil {
				t.Fatal(err)
			}
			var j map[string]any
			if err := json.Unmarshal(raw, &j); err != nil {
				t.Fatal(err)
			}
			if ones(j["synced"]) < 16 || ones(j["synced"]) > ones(j["done"]) {
				t.Fatalf("journal: %d chunks synced of %d done, want at least 16 synced", ones(j["synced"]), ones(j["done"]))
			}
			want := tc.want(j)
			if tc.mangle != nil {
				tc.mangle(t, j)
				raw, _ = json.Marshal(j)
			} else {
				raw = raw[:len(raw)/2]
			}
			if err := os.WriteFile(dst+".journal", raw, 0o644); err != nil {
				t.Fatal(err)
			}
			reads := src.reads.Load()
			tr := f.StartFetch(context.Background(), src, modelcache.Object{Key: "j.bin"}, dst, nil)
			<-tr.Done()
			if err := tr.Err(); err != nil {
				t.Fatal(err)
			}
			checkFetched(t, dst, data)
			if tr.Resumed() != want {
				t.Errorf("Resumed() = %d, want %d", tr.Resumed(), want)
			}
			if got, want := src.reads.Load()-reads, int64(chunks)-want/chunk; got != want {
				t.Errorf("%d ranges read on resume, want %d", got, want)
			}
		})
	}
}

// ones counts the chunks in a journal's bitmap (base64 in JSON).
func ones(v any) int64 {
	s, _ := v.(string)
	var b []byte
	if err := json.Unmarshal([]byte(`"`+s+`"`), &b); err != nil {
		return -1
	}
	n := 0
	for _, x := range b {
		n += bits.OnesCount8(x)
	}
	return int64(n)
}
