package modelcache_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/crc64nvme"
	"github.com/minio/minio-go/v7"

	"github.com/infera-dev/infera/internal/fluid"
	"github.com/infera-dev/infera/internal/modelcache"
	"github.com/infera-dev/infera/internal/testutil"
)

// checkFetchLeaks fails the test when goroutines running this package's code outlive it.
// Register it first: cleanups run last-in first-out.
func checkFetchLeaks(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		var leaked []string
		testutil.Poll(10*time.Second, func() bool {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			leaked = leaked[:0]
			for g := range strings.SplitSeq(string(buf), "\n\n") {
				if strings.Contains(g, "infera/internal/modelcache.") {
					leaked = append(leaked, g)
				}
			}
			return len(leaked) == 0
		})
		if len(leaked) > 0 {
			t.Errorf("goroutines of modelcache left running:\n%s", strings.Join(leaked, "\n\n"))
		}
	})
}

// randomBytes is n bytes of a seeded stream, so that each test's data differs.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)})
	_, _ = r.Read(b)
	return b
}

// s3Rig is a versitygw with a bucket, and sources for it.
type s3Rig struct {
	t      *testing.T
	srv    *testutil.S3Server
	bucket string
}

func newS3Rig(t *testing.T) *s3Rig {
	t.Helper()
	r := &s3Rig{t: t, srv: testutil.StartS3(t), bucket: "models"}
	r.srv.MakeBucket(r.bucket)
	return r
}

// put stores data at models/<key> and returns its ETag.
func (r *s3Rig) put(key string, data []byte) string {
	r.t.Helper()
	return r.srv.Put(r.bucket, key, data)
}

// source is the s3:// (or oss://) source of prefix at endpoint (the server's when "").
func (r *s3Rig) source(scheme, prefix, endpoint string) modelcache.Source {
	r.t.Helper()
	if endpoint == "" {
		endpoint = r.srv.Endpoint()
	}
	mp := scheme + "://" + r.bucket
	if prefix != "" {
		mp += "/" + prefix
	}
	src, err := modelcache.NewSource(fluid.Mount{MountPoint: mp},
		map[string]string{"fs." + scheme + ".endpoint": endpoint},
		map[string]string{"fs." + scheme + ".accessKeyId": r.srv.Access(), "fs." + scheme + ".accessKeySecret": r.srv.Secret()})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { closeIdle(src) })
	return src
}

// closeIdle closes a source's idle connections.
func closeIdle(src modelcache.Source) {
	if c, ok := src.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

func stat(t *testing.T, src modelcache.Source, key string) modelcache.Object {
	t.Helper()
	obj, err := src.Stat(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return obj
}

// checkFetched asserts dst holds want and nothing of the fetch is left beside it.
func checkFetched(t *testing.T, dst string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: %d bytes, md5 %x; want %d bytes, md5 %x", dst, len(got), md5.Sum(got), len(want), md5.Sum(want))
	}
	checkGone(t, dst+".partial", dst+".journal", dst+".journal.tmp")
}

func checkGone(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want it gone", filepath.Base(p), err)
		}
	}
}

func checkExists(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v, want it there", filepath.Base(p), err)
		}
	}
}

// fastRetries makes a Fetcher retry at once and often, for tests that break connections.
func fastRetries(f modelcache.Fetcher) modelcache.Fetcher {
	f.Retries = 500
	f.Backoff = func(int) time.Duration { return 5 * time.Millisecond }
	return f
}

// rangeProxy is an HTTP reverse proxy in front of a server that counts the body bytes of
// ranged GET responses and can slow, corrupt or stall them.
type rangeProxy struct {
	srv    *httptest.Server
	tr     *http.Transport
	served atomic.Int64
	gets   atomic.Int64
	open   atomic.Int64 // range responses still being relayed

	mu          sync.Mutex
	rate        float64 // bytes per second per response; 0: as fast as it goes
	corruptNext bool    // flip a byte of the next GET response
	stallNext   int64   // > 0: the next GET response stops after this many bytes
	stalled     chan struct{}
}

func newRangeProxy(t *testing.T, upstream string) *rangeProxy {
	t.Helper()
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	p := &rangeProxy{tr: &http.Transport{MaxIdleConnsPerHost: 64}, stalled: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(u) // keeps the client's Host: its signature covers it
	rp.Transport = p.tr
	rp.FlushInterval = -1
	rp.ErrorLog = nil
	rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) { w.WriteHeader(http.StatusBadGateway) }
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method != http.MethodGet || resp.StatusCode/100 != 2 || resp.Request.Header.Get("Range") == "" {
			return nil // not an object's range: a listing, the bucket's location, ...
		}
		p.gets.Add(1)
		p.open.Add(1)
		p.mu.Lock()
		b := &proxyBody{p: p, rc: resp.Body, ctx: resp.Request.Context(), rate: p.rate, start: time.Now()}
		if p.corruptNext && resp.ContentLength > 16 {
			b.flipAt, p.corruptNext = resp.ContentLength/2, false
		} else {
			b.flipAt = -1
		}
		if p.stallNext > 0 && resp.ContentLength > p.stallNext {
			b.stallAt, p.stallNext = p.stallNext, 0
		}
		p.mu.Unlock()
		resp.Body = b
		return nil
	}
	p.srv = httptest.NewServer(rp)
	t.Cleanup(func() {
		p.srv.CloseClientConnections()
		p.srv.Close()
		p.tr.CloseIdleConnections()
	})
	return p
}

func (p *rangeProxy) URL() string { return p.srv.URL }

func (p *rangeProxy) set(f func(p *rangeProxy)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

type proxyBody struct {
	p       *rangeProxy
	rc      io.ReadCloser
	ctx     context.Context
	rate    float64
	start   time.Time
	sent    int64
	flipAt  int64
	stallAt int64
	closed  atomic.Bool
}

func (b *proxyBody) Read(buf []byte) (int, error) {
	if b.stallAt > 0 && b.sent >= b.stallAt {
		<-b.ctx.Done() // the client gave up on this response
		close(b.p.stalled)
		return 0, b.ctx.Err()
	}
	if b.stallAt > 0 {
		buf = buf[:min(int64(len(buf)), b.stallAt-b.sent)]
	}
	if b.rate > 0 {
		buf = buf[:min(len(buf), 16<<10)]
	}
	n, err := b.rc.Read(buf)
	if b.flipAt >= b.sent && b.flipAt < b.sent+int64(n) {
		buf[b.flipAt-b.sent] ^= 0x55
	}
	b.sent += int64(n)
	b.p.served.Add(int64(n))
	if b.rate > 0 {
		// Pacing, not waiting for state: this is what makes the link slow.
		time.Sleep(time.Until(b.start.Add(time.Duration(float64(b.sent) / b.rate * float64(time.Second)))))
	}
	return n, err
}

func (b *proxyBody) Close() error {
	if b.closed.CompareAndSwap(false, true) {
		b.p.open.Add(-1)
	}
	return b.rc.Close()
}

// idle waits until no range response is being relayed (a cancelled fetch's responses may
// still be draining), so that served counts what the next fetch reads.
func (p *rangeProxy) idle(t *testing.T) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, "the proxy idle", func() (bool, string) {
		return p.open.Load() == 0, fmt.Sprint(p.open.Load(), " responses open")
	})
}

// countingHandler counts log records by message.
type countingHandler struct {
	mu   sync.Mutex
	msgs map[string]int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.msgs == nil {
		h.msgs = map[string]int{}
	}
	h.msgs[r.Message]++
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }
func (h *countingHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.msgs[msg]
}

// TestFetchSizes fetches objects around chunk boundaries from S3 and checks each against the
// store's MD5 (its ETag) and the checksum the fetch verified.
func TestFetchSizes(t *testing.T) {
	checkFetchLeaks(t)
	const chunk = 4096
	r := newS3Rig(t)
	src := r.source("s3", "", "")
	f := modelcache.Fetcher{ChunkSize: chunk, Streams: 3}
	for i, size := range []int{0, 1, chunk - 1, chunk, chunk + 1, 2 * chunk, 7*chunk + 123} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			data := randomBytes(size, uint64(i))
			key := fmt.Sprintf("size-%d.bin", size)
			etag := r.put(key, data)
			obj := stat(t, src, key)
			if sum := md5.Sum(data); obj.Checksums["md5"] != hex.EncodeToString(sum[:]) || obj.ETag != etag {
				t.Errorf("Stat: ETag %q md5 %q, want %x", obj.ETag, obj.Checksums["md5"], sum)
			}
			dst := filepath.Join(t.TempDir(), "out", key)
			var landed atomic.Int64
			if err := f.Fetch(context.Background(), src, obj, dst, func(d int64) { landed.Add(d) }); err != nil {
				t.Fatal(err)
			}
			checkFetched(t, dst, data)
			if landed.Load() != int64(size) {
				t.Errorf("progress reported %d bytes, want %d", landed.Load(), size)
			}
		})
	}
}

// memSource is a Source of one object in memory with the checksums a test gives it. With
// gate set, each ReadRange sends its offset on reqs and waits for a token from gate.
type memSource struct {
	key   string
	data  []byte
	etag  string
	sums  map[string]string
	reqs  chan int64
	gate  chan struct{}
	reads atomic.Int64
}

func (s *memSource) String() string { return "mem://" + s.key }

func (s *memSource) List(ctx context.Context) ([]modelcache.Object, error) {
	o, err := s.Stat(ctx, s.key)
	return []modelcache.Object{o}, err
}

func (s *memSource) Stat(_ context.Context, key string) (modelcache.Object, error) {
	if key != s.key {
		return modelcache.Object{}, modelcache.ErrNotFound
	}
	return modelcache.Object{Key: key, Size: int64(len(s.data)), ETag: s.etag, Checksums: s.sums}, nil
}

func (s *memSource) ReadRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if s.gate != nil {
		select {
		case s.reqs <- off:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		select {
		case <-s.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	s.reads.Add(1)
	if n < 0 {
		n = int64(len(s.data)) - off
	}
	return io.NopCloser(bytes.NewReader(s.data[off : off+n])), nil
}

// TestFetchChecksums verifies each kind of checksum a store gives, right and wrong.
func TestFetchChecksums(t *testing.T) {
	checkFetchLeaks(t)
	data := randomBytes(10_000, 7)
	sums := map[string]string{ // of data, from other implementations
		"md5":       hexSum("md5", data),
		"sha1":      hexSum("sha1", data),
		"sha256":    hexSum("sha256", data),
		"crc32":     hexSum("crc32", data),
		"crc32c":    hexSum("crc32c", data),
		"crc64nvme": hexSum("crc64nvme", data),
	}
	wrong := func(s string) string { return strings.Repeat("0", len(s)) }
	for _, tc := range []struct {
		name    string
		sums    map[string]string
		corrupt bool
	}{
		{name: "none"},
		{name: "md5", sums: map[string]string{"md5": sums["md5"]}},
		{name: "md5 wrong", sums: map[string]string{"md5": wrong(sums["md5"])}, corrupt: true},
		{name: "sha1", sums: map[string]string{"sha1": sums["sha1"]}},
		{name: "sha1 wrong", sums: map[string]string{"sha1": wrong(sums["sha1"])}, corrupt: true},
		{name: "sha256", sums: map[string]string{"sha256": sums["sha256"]}},
		{name: "sha256 wrong", sums: map[string]string{"sha256": wrong(sums["sha256"])}, corrupt: true},
		{name: "crc32", sums: map[string]string{"crc32": sums["crc32"]}},
		{name: "crc32 wrong", sums: map[string]string{"crc32": wrong(sums["crc32"])}, corrupt: true},
		{name: "crc32c", sums: map[string]string{"crc32c": sums["crc32c"]}},
		{name: "crc32c wrong", sums: map[string]string{"crc32c": wrong(sums["crc32c"])}, corrupt: true},
		{name: "crc64nvme", sums: map[string]string{"crc64nvme": sums["crc64nvme"]}},
		{name: "crc64nvme wrong", sums: map[string]string{"crc64nvme": wrong(sums["crc64nvme"])}, corrupt: true},
		// One checksum is verified, the cheapest: a wrong MD5 beside a right CRC32C goes unseen.
		{name: "crc32c before md5", sums: map[string]string{"crc32c": sums["crc32c"], "md5": wrong(sums["md5"])}},
		{name: "crc32c wrong before md5", sums: map[string]string{"crc32c": wrong(sums["crc32c"]), "md5": sums["md5"]}, corrupt: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &memSource{key: "m.bin", data: data, etag: "v1", sums: tc.sums}
			dst := filepath.Join(t.TempDir(), "m.bin")
			f := modelcache.Fetcher{ChunkSize: 1000, Streams: 4}
			err := f.Fetch(context.Background(), src, modelcache.Object{Key: "m.bin"}, dst, nil)
			if tc.corrupt {
				if !errors.Is(err, modelcache.ErrCorrupt) {
					t.Fatalf("Fetch: %v, want ErrCorrupt", err)
				}
				checkGone(t, dst, dst+".partial", dst+".journal")
				f.NoVerify = true
				if err := f.Fetch(context.Background(), src, modelcache.Object{Key: "m.bin"}, dst, nil); err != nil {
					t.Fatalf("Fetch with NoVerify: %v", err)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			checkFetched(t, dst, data)
		})
	}
}

// TestFetchCorruptRange flips one byte of one range response on its way from the S3 server:
// the fetch fails with ErrCorrupt and leaves nothing; the next one, with the link mended,
// succeeds.
func TestFetchCorruptRange(t *testing.T) {
	checkFetchLeaks(t)
	r := newS3Rig(t)
	data := randomBytes(50_000, 11)
	r.put("w.bin", data)
	proxy := newRangeProxy(t, r.srv.Endpoint())
	src := r.source("s3", "", proxy.URL())
	proxy.set(func(p *rangeProxy) { p.corruptNext = true })
	dst := filepath.Join(t.TempDir(), "w.bin")
	f := modelcache.Fetcher{ChunkSize: 8192, Streams: 4}
	err := f.Fetch(context.Background(), src, modelcache.Object{Key: "w.bin"}, dst, nil)
	if !errors.Is(err, modelcache.ErrCorrupt) {
		t.Fatalf("Fetch through a corrupting link: %v, want ErrCorrupt", err)
	}
	checkGone(t, dst, dst+".partial", dst+".journal")
	if err := f.Fetch(context.Background(), src, modelcache.Object{Key: "w.bin"}, dst, nil); err != nil {
		t.Fatalf("Fetch after the link is mended: %v", err)
	}
	checkFetched(t, dst, data)
}

// TestFetchResume cancels a fetch after some chunks, then fetches again: only what was not
// written before is read again, at most one chunk per stream more.
func TestFetchResume(t *testing.T) {
	checkFetchLeaks(t)
	const chunk, streams, chunks = 4096, 3, 40
	r := newS3Rig(t)
	data := randomBytes(chunks*chunk, 3)
	r.put("r.bin", data)
	proxy := newRangeProxy(t, r.srv.Endpoint())
	src := r.source("s3", "", proxy.URL())
	dst := filepath.Join(t.TempDir(), "r.bin")
	f := modelcache.Fetcher{ChunkSize: chunk, Streams: streams}

	ctx, cancel := context.WithCancel(context.Background())
	var landed atomic.Int64
	err := f.Fetch(ctx, src, modelcache.Object{Key: "r.bin"}, dst, func(d int64) {
		if landed.Add(d) >= 10*chunk {
			cancel()
		}
	})
	cancel()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Fetch: %v, want context.Canceled", err)
	}
	checkGone(t, dst)
	checkExists(t, dst+".partial", dst+".journal")
	proxy.idle(t)
	first := proxy.served.Swap(0)

	tr := f.StartFetch(context.Background(), src, modelcache.Object{Key: "r.bin"}, dst, nil)
	<-tr.Done()
	if err := tr.Err(); err != nil {
		t.Fatal(err)
	}
	checkFetched(t, dst, data)
	second := proxy.served.Load()
	if again := first + second - int64(len(data)); again > streams*chunk {
		t.Errorf("read %d bytes again after the resume, want at most %d (streams*chunk)", again, streams*chunk)
	}
	if tr.Resumed() < 10*chunk-streams*chunk || tr.Resumed()+second != int64(len(data)) {
		t.Errorf("Resumed() = %d with %d bytes read, of %d", tr.Resumed(), second, len(data))
	}
}

// TestFetchChangedBetween leaves a journal of one version and fetches after the object
// changed: the fetch starts over and ends with the new content.
func TestFetchChangedBetween(t *testing.T) {
	checkFetchLeaks(t)
	const chunk = 4096
	for _, tc := range []struct {
		name    string
		newSize int
	}{
		{"same size", 20 * chunk},
		{"other size", 13*chunk + 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newS3Rig(t)
			old := randomBytes(20*chunk, 1)
			r.put("c.bin", old)
			src := r.source("s3", "", "")
			dst := filepath.Join(t.TempDir(), "c.bin")
			f := modelcache.Fetcher{ChunkSize: chunk, Streams: 2}
			ctx, cancel := context.WithCancel(context.Background())
			var landed atomic.Int64
			err := f.Fetch(ctx, src, modelcache.Object{Key: "c.bin"}, dst, func(d int64) {
				if landed.Add(d) >= 5*chunk {
					cancel()
				}
			})
			cancel()
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled Fetch: %v", err)
			}
			checkExists(t, dst+".partial", dst+".journal")

			fresh := randomBytes(tc.newSize, 2)
			r.put("c.bin", fresh)
			tr := f.StartFetch(context.Background(), src, modelcache.Object{Key: "c.bin"}, dst, nil)
			<-tr.Done()
			if err := tr.Err(); err != nil {
				t.Fatal(err)
			}
			if tr.Resumed() != 0 {
				t.Errorf("Resumed() = %d, want 0: the old version's chunks must not be kept", tr.Resumed())
			}
			checkFetched(t, dst, fresh)
		})
	}
}

// TestFetchChangedDuring replaces the object while it is fetched: once, the fetch starts over
// and ends with the new content; twice, it fails with ErrChanged and leaves nothing.
func TestFetchChangedDuring(t *testing.T) {
	checkFetchLeaks(t)
	const chunk, chunks = 4096, 12
	for _, tc := range []struct {
		changes int
		wantErr error
	}{
		{1, nil},
		{2, modelcache.ErrChanged},
	} {
		t.Run(fmt.Sprint(tc.changes), func(t *testing.T) {
			r := newS3Rig(t)
			versions := [][]byte{randomBytes(chunks*chunk, 1), randomBytes(chunks*chunk, 2), randomBytes(chunks*chunk, 3)}
			r.put("d.bin", versions[0])
			src := r.source("s3", "", "")
			dst := filepath.Join(t.TempDir(), "d.bin")
			var mu sync.Mutex
			changes, sinceChange := 0, int64(0)
			var putErr error
			progress := func(d int64) {
				mu.Lock()
				defer mu.Unlock()
				sinceChange += d
				if changes < tc.changes && sinceChange >= 2*chunk {
					changes++
					sinceChange = 0
					_, err := r.srv.Client().PutObject(context.Background(), r.bucket, "d.bin",
						bytes.NewReader(versions[changes]), chunks*chunk, minio.PutObjectOptions{DisableMultipart: true})
					putErr = errors.Join(putErr, err)
				}
			}
			f := modelcache.Fetcher{ChunkSize: chunk, Streams: 2}
			err := f.Fetch(context.Background(), src, modelcache.Object{Key: "d.bin"}, dst, progress)
			if putErr != nil {
				t.Fatal(putErr)
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Fetch: %v, want %v", err, tc.wantErr)
				}
				checkGone(t, dst, dst+".partial", dst+".journal")
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkFetched(t, dst, versions[tc.changes])
		})
	}
}

// TestFetchServerRestart kills the S3 server mid-download and starts it again: the fetch
// retries its ranges and completes.
func TestFetchServerRestart(t *testing.T) {
	checkFetchLeaks(t)
	const chunk, chunks = 16 << 10, 32
	r := newS3Rig(t)
	data := randomBytes(chunks*chunk, 5)
	r.put("k.bin", data)
	proxy := newRangeProxy(t, r.srv.Endpoint())
	proxy.set(func(p *rangeProxy) { p.rate = 2 << 20 }) // 2 MiB/s a stream: 128 ms a chunk
	src := r.source("s3", "", proxy.URL())
	dst := filepath.Join(t.TempDir(), "k.bin")
	logs := &countingHandler{}
	f := fastRetries(modelcache.Fetcher{ChunkSize: chunk, Streams: 4, Logger: slog.New(logs)})
	quarter := make(chan struct{})
	var once sync.Once
	var landed atomic.Int64
	tr := f.StartFetch(context.Background(), src, modelcache.Object{Key: "k.bin"}, dst, func(d int64) {
		if landed.Add(d) >= chunks*chunk/4 {
			once.Do(func() { close(quarter) })
		}
	})
	select {
	case <-quarter:
	case <-tr.Done():
		t.Fatalf("fetch ended before a quarter was in: %v", tr.Err())
	}
	r.srv.Stop()
	r.srv.Restart()
	<-tr.Done()
	if err := tr.Err(); err != nil {
		t.Fatal(err)
	}
	checkFetched(t, dst, data)
	if logs.count("range failed, retrying") == 0 {
		t.Error("no range was retried: the server was not killed mid-download")
	}
}

// TestFetchStall stops a range response mid-way without closing it: the stall detector gives
// up on that request and the range is read again.
func TestFetchStall(t *testing.T) {
	checkFetchLeaks(t)
	r := newS3Rig(t)
	data := randomBytes(100_000, 9)
	r.put("s.bin", data)
	proxy := newRangeProxy(t, r.srv.Endpoint())
	proxy.set(func(p *rangeProxy) { p.stallNext = 1000 })
	src := r.source("s3", "", proxy.URL())
	dst := filepath.Join(t.TempDir(), "s.bin")
	logs := &countingHandler{}
	f := modelcache.Fetcher{ChunkSize: 16 << 10, Streams: 2, StallTimeout: 200 * time.Millisecond, Logger: slog.New(logs)}
	if err := f.Fetch(context.Background(), src, modelcache.Object{Key: "s.bin"}, dst, nil); err != nil {
		t.Fatal(err)
	}
	checkFetched(t, dst, data)
	select {
	case <-proxy.stalled: // the proxy sees the client hang up on its own time
	case <-time.After(10 * time.Second):
		t.Error("the stalled response was not given up on")
	}
	if logs.count("range failed, retrying") == 0 {
		t.Error("no range was retried")
	}
}

// TestTransferWant checks that a wanted range is fetched before the rest and that Wait
// returns once it is written.
func TestTransferWant(t *testing.T) {
	checkFetchLeaks(t)
	const chunk = 1024
	data := randomBytes(8*chunk, 4)
	src := &memSource{key: "p.bin", data: data, etag: "v1", sums: map[string]string{"md5": hexSum("md5", data)},
		reqs: make(chan int64), gate: make(chan struct{})}
	dst := filepath.Join(t.TempDir(), "p.bin")
	f := modelcache.Fetcher{ChunkSize: chunk, Streams: 1}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr := f.StartFetch(ctx, src, modelcache.Object{Key: "p.bin"}, dst, nil)

	if off := <-src.reqs; off != 0 {
		t.Fatalf("first request at %d, want 0", off)
	}
	tr.Want(6*chunk+10, 2*chunk) // chunks 6 and 7
	src.gate <- struct{}{}       // chunk 0
	waited := make(chan error, 1)
	var order []int64
	for range 7 {
		off := <-src.reqs
		order = append(order, off/chunk)
		switch off / chunk {
		case 7: // in flight: Wait blocks until it is written
			go func() { waited <- tr.Wait(ctx, 7*chunk, 1) }()
		case 1:
			if !slices.Contains(order, 7) {
				t.Fatalf("chunk 1 requested before the wanted chunks: order %v", order)
			}
			if err := <-waited; err != nil {
				t.Errorf("Wait: %v", err)
			}
			if _, err := os.Stat(dst); err == nil {
				t.Error("dst exists before the fetch is complete")
			}
			got := make([]byte, chunk)
			pf, err := os.Open(tr.Partial())
			if err != nil {
				t.Fatal(err)
			}
			_, err = pf.ReadAt(got, 7*chunk)
			pf.Close()
			if err != nil || !bytes.Equal(got, data[7*chunk:]) {
				t.Errorf("partial file at chunk 7 after Wait: %v, content equal %v", err, bytes.Equal(got, data[7*chunk:]))
			}
		}
		src.gate <- struct{}{}
	}
	<-tr.Done()
	if err := tr.Err(); err != nil {
		t.Fatal(err)
	}
	if want := []int64{6, 7, 1, 2, 3, 4, 5}; !slices.Equal(order, want) {
		t.Errorf("chunks fetched after 0 in order %v, want %v", order, want)
	}
	checkFetched(t, dst, data)
	if err := tr.Wait(ctx, 0, int64(len(data))); err != nil {
		t.Errorf("Wait after the end: %v", err)
	}
}

// crashChildEnv makes the test binary act as the child of TestFetchCrash.
const crashChildEnv = "INFERA_MODELCACHE_CRASH_CHILD"

// crashSetup is what the parent tells the child.
type crashSetup struct {
	Endpoint, Access, Secret, Bucket, Key, Dst string
	KillAfter                                  int64
}

const crashChunk, crashStreams, crashChunks = 64 << 10, 4, 32

// TestFetchCrash fetches in a child process that SIGKILLs itself part way, through a slow
// link; the parent then resumes and checks that at most the chunks in flight at the kill
// (one per stream) are read again and that the file is right.
func TestFetchCrash(t *testing.T) {
	if env := os.Getenv(crashChildEnv); env != "" {
		crashChild(env)
		return
	}
	checkFetchLeaks(t)
	r := newS3Rig(t)
	data := randomBytes(crashChunks*crashChunk, 13)
	r.put("big.bin", data)
	proxy := newRangeProxy(t, r.srv.Endpoint())
	proxy.set(func(p *rangeProxy) { p.rate = 2 << 20 })
	dst := filepath.Join(t.TempDir(), "big.bin")
	setup, err := json.Marshal(crashSetup{
		Endpoint: proxy.URL(), Access: r.srv.Access(), Secret: r.srv.Secret(), Bucket: r.bucket, Key: "big.bin",
		Dst: dst, KillAfter: 10 * crashChunk,
	})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestFetchCrash$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+string(setup))
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("child: %v, want killed\n%s", err, out)
	}
	if ws, ok := exit.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child: %v, want SIGKILL\n%s", err, out)
	}
	checkGone(t, dst)
	checkExists(t, dst+".partial", dst+".journal")
	inChild := proxy.served.Swap(0)

	proxy.set(func(p *rangeProxy) { p.rate = 0 })
	src := r.source("s3", "", proxy.URL())
	f := modelcache.Fetcher{ChunkSize: crashChunk, Streams: crashStreams}
	if err := f.Fetch(context.Background(), src, modelcache.Object{Key: "big.bin"}, dst, nil); err != nil {
		t.Fatal(err)
	}
	checkFetched(t, dst, data)
	inParent := proxy.served.Load()
	again := inChild + inParent - int64(len(data))
	t.Logf("child read %d bytes, parent %d, again %d (at most %d)", inChild, inParent, again, crashStreams*crashChunk)
	if again > crashStreams*crashChunk {
		t.Errorf("read %d bytes again after the kill, want at most %d (streams*chunk)", again, crashStreams*crashChunk)
	}
	if inParent >= int64(len(data)) {
		t.Errorf("the resume read %d bytes of %d: nothing was kept", inParent, len(data))
	}
}

func crashChild(env string) {
	var s crashSetup
	if err := json.Unmarshal([]byte(env), &s); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	src, err := modelcache.NewSource(fluid.Mount{MountPoint: "s3://" + s.Bucket},
		map[string]string{"fs.s3.endpoint": s.Endpoint},
		map[string]string{"fs.s3.accessKeyId": s.Access, "fs.s3.accessKeySecret": s.Secret})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	var landed atomic.Int64
	f := modelcache.Fetcher{ChunkSize: crashChunk, Streams: crashStreams}
	err = f.Fetch(context.Background(), src, modelcache.Object{Key: s.Key}, s.Dst, func(d int64) {
		if landed.Add(d) >= s.KillAfter {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	})
	fmt.Fprintln(os.Stderr, "fetch returned before the kill:", err)
	os.Exit(4)
}

// hexSum is data's checksum by another implementation than the fetcher's choice of library
// where there is one.
func hexSum(name string, data []byte) string {
	var h hash.Hash
	switch name {
	case "md5":
		h = md5.New()
	case "sha1":
		h = sha1.New()
	case "sha256":
		h = sha256.New()
	case "crc32":
		h = crc32.NewIEEE()
	case "crc32c":
		h = crc32.New(crc32.MakeTable(crc32.Castagnoli))
	case "crc64nvme":
		h = crc64nvme.New()
	default:
		panic(name)
	}
	h.Write(data)
	return hex.EncodeToString(h.Sum(nil))
}
