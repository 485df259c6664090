package modelcache_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/fluid"
	"github.com/infera-dev/infera/internal/modelcache"
)

// fileServer serves one file at /models/model.bin, with ranges (http.ServeContent) or without
// (the whole body whatever the request asks), and counts GETs.
type fileServer struct {
	data   []byte
	ranged bool
	gets   atomic.Int64
	header http.Header // extra response headers
}

func (s *fileServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/models/model.bin" {
		http.NotFound(w, r)
		return
	}
	if r.Method == http.MethodGet {
		s.gets.Add(1)
	}
	for k, v := range s.header {
		w.Header()[k] = v
	}
	w.Header().Set("ETag", `"v1"`)
	if s.ranged {
		http.ServeContent(w, r, "model.bin", time.Unix(1700000000, 0), bytes.NewReader(s.data))
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(s.data)))
	if r.Method == http.MethodGet {
		_, _ = w.Write(s.data)
	}
}

// TestHTTPSource reads one file from servers with and without ranges, over http and https.
func TestHTTPSource(t *testing.T) {
	checkFetchLeaks(t)
	const chunk = 4096
	data := randomBytes(10*chunk+17, 21)
	for _, tc := range []struct {
		name   string
		ranged bool
		tls    bool
	}{
		{"ranges", true, false},
		{"no ranges", false, false},
		{"https ranges", true, true},
		{"https no ranges", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := &fileServer{data: data, ranged: tc.ranged}
			var srv *httptest.Server
			var client *http.Client
			if tc.tls {
				srv = httptest.NewTLSServer(fs)
				client = srv.Client()
			} else {
				srv = httptest.NewServer(fs)
			}
			defer srv.Close()
			src, err := modelcache.NewHTTPSource(srv.URL+"/models/model.bin", client)
			if err != nil {
				t.Fatal(err)
			}
			defer src.CloseIdleConnections()
			ctx := context.Background()
			objs, err := src.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) != 1 || objs[0].Key != "model.bin" || objs[0].Size != int64(len(data)) || objs[0].ETag != "v1" {
				t.Fatalf("List = %+v, want model.bin of %d bytes, ETag v1", objs, len(data))
			}
			if src.Ranged() != tc.ranged {
				t.Errorf("Ranged() = %v, want %v", src.Ranged(), tc.ranged)
			}
			if rs, ok := modelcache.Source(src).(modelcache.Ranged); !ok || rs.Ranged() != tc.ranged {
				t.Errorf("Source as Ranged: %v", ok)
			}
			if _, err := src.Stat(ctx, "other.bin"); !errors.Is(err, modelcache.ErrNotFound) {
				t.Errorf("Stat(other.bin): %v, want ErrNotFound", err)
			}

			rc, err := src.ReadRange(ctx, "model.bin", 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(rc)
			rc.Close()
			if !bytes.Equal(got, data[:100]) {
				t.Errorf("ReadRange(0, 100): %d bytes, wrong content", len(got))
			}
			rc, err = src.ReadRange(ctx, "model.bin", 100, 100)
			if tc.ranged {
				if err != nil {
					t.Fatal(err)
				}
				got, _ = io.ReadAll(rc)
				rc.Close()
				if !bytes.Equal(got, data[100:200]) {
					t.Errorf("ReadRange(100, 100): %d bytes, wrong content", len(got))
				}
			} else if err == nil {
				rc.Close()
				t.Error("ReadRange(100, 100) from a server without ranges succeeded")
			}

			fs.gets.Store(0)
			dst := filepath.Join(t.TempDir(), "model.bin")
			f := modelcache.Fetcher{ChunkSize: chunk, Streams: 4}
			if err := f.Fetch(ctx, src, objs[0], dst, nil); err != nil {
				t.Fatal(err)
			}
			checkFetched(t, dst, data)
			wantGets := int64(11)
			if !tc.ranged {
				wantGets = 1 // one stream
			}
			if fs.gets.Load() != wantGets {
				t.Errorf("%d GETs, want %d", fs.gets.Load(), wantGets)
			}
		})
	}
}

// TestHTTPChecksums takes checksums from the headers a store sends with a file.
func TestHTTPChecksums(t *testing.T) {
	checkFetchLeaks(t)
	data := []byte("some weights")
	b64 := func(name string) string {
		b, _ := hex.DecodeString(hexSum(name, data))
		return base64.StdEncoding.EncodeToString(b)
	}
	for _, tc := range []struct {
		name   string
		header http.Header
		etag   string
		want   map[string]string
	}{
		{name: "none"},
		{name: "plain server etag is not md5", etag: hexSum("md5", data)},
		{name: "s3 etag", etag: hexSum("md5", data), header: http.Header{"X-Amz-Request-Id": {"1"}},
			want: map[string]string{"md5": hexSum("md5", data)}},
		{name: "s3 multipart etag", etag: hexSum("md5", data) + "-3", header: http.Header{"X-Amz-Request-Id": {"1"}}},
		{name: "x-amz-checksum", header: http.Header{"X-Amz-Checksum-Sha256": {b64("sha256")}, "X-Amz-Checksum-Crc32c": {b64("crc32c")}},
			want: map[string]string{"sha256": hexSum("sha256", data), "crc32c": hexSum("crc32c", data)}},
		{name: "composite checksum", header: http.Header{"X-Amz-Checksum-Crc32c": {b64("crc32c") + "-2"}}},
		{name: "content-md5", header: http.Header{"Content-Md5": {b64("md5")}},
			want: map[string]string{"md5": hexSum("md5", data)}},
		{name: "x-goog-hash", header: http.Header{"X-Goog-Hash": {"crc32c=" + b64("crc32c") + ",md5=" + b64("md5")}},
			want: map[string]string{"md5": hexSum("md5", data), "crc32c": hexSum("crc32c", data)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tc.header {
					w.Header()[k] = v
				}
				if tc.etag != "" {
					w.Header().Set("ETag", `"`+tc.etag+`"`)
				}
				w.Header().Set("Content-Length", strconv.Itoa(len(data)))
				if r.Method == http.MethodGet {
					_, _ = w.Write(data)
				}
			}))
			defer srv.Close()
			src, err := modelcache.NewHTTPSource(srv.URL+"/m.bin", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer src.CloseIdleConnections()
			obj := stat(t, src, "m.bin")
			if !mapsEqual(obj.Checksums, tc.want) {
				t.Errorf("Checksums = %v, want %v", obj.Checksums, tc.want)
			}
			dst := filepath.Join(t.TempDir(), "m.bin")
			if err := (&modelcache.Fetcher{}).Fetch(context.Background(), src, obj, dst, nil); err != nil {
				t.Fatal(err)
			}
			checkFetched(t, dst, data)
		})
	}
}

// TestHTTPErrors maps statuses to the package's errors and keeps a presigned URL's signature
// out of messages.
func TestHTTPErrors(t *testing.T) {
	checkFetchLeaks(t)
	const signature = "X-Amz-Signature=0123456789abcdef"
	for _, tc := range []struct {
		status int
		want   error
	}{
		{http.StatusForbidden, modelcache.ErrAccessDenied},
		{http.StatusUnauthorized, modelcache.ErrAccessDenied},
		{http.StatusNotFound, modelcache.ErrNotFound},
		{http.StatusGone, modelcache.ErrNotFound},
		{http.StatusInternalServerError, nil},
	} {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
			}))
			defer srv.Close()
			src, err := modelcache.NewSource(fluid.Mount{MountPoint: srv.URL + "/dir/m.bin?" + signature}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer closeIdle(src)
			if src.String() != srv.URL+"/dir/m.bin" {
				t.Errorf("String() = %q, want the URL without its query", src.String())
			}
			_, err = src.List(context.Background())
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("List: %v, want %v", err, tc.want)
			}
			if msg := err.Error(); !strings.Contains(msg, srv.URL+"/dir/m.bin") || !strings.Contains(msg, strconv.Itoa(tc.status)) || strings.Contains(msg, signature) {
				t.Errorf("error %q: want the URL without its query and the status", msg)
			}
		})
	}

	// A server that is not there: the transport's error names the URL, without the query.
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	src, err := modelcache.NewHTTPSource(url+"/m.bin?"+signature, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.CloseIdleConnections()
	if _, err := src.Stat(context.Background(), "m.bin"); err == nil || strings.Contains(err.Error(), signature) {
		t.Errorf("Stat of a closed server: %v", err)
	}
}

// TestHTTPPresigned stats a URL that refuses HEAD (a presigned GET) by asking for one byte.
func TestHTTPPresigned(t *testing.T) {
	checkFetchLeaks(t)
	data := randomBytes(5000, 5)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		w.Header().Set("ETag", `"v7"`)
		http.ServeContent(w, r, "m.bin", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	src, err := modelcache.NewHTTPSource(srv.URL+"/m.bin?X-Amz-Signature=abc", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.CloseIdleConnections()
	obj := stat(t, src, "m.bin")
	if obj.Size != int64(len(data)) || obj.ETag != "v7" || !src.Ranged() {
		t.Errorf("Stat = %+v, ranged %v; want %d bytes, ETag v7, ranged", obj, src.Ranged(), len(data))
	}
	dst := filepath.Join(t.TempDir(), "m.bin")
	if err := (&modelcache.Fetcher{ChunkSize: 1000}).Fetch(context.Background(), src, obj, dst, nil); err != nil {
		t.Fatal(err)
	}
	checkFetched(t, dst, data)
}
