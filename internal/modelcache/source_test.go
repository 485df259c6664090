package modelcache_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/infera-dev/infera/internal/fluid"
	"github.com/infera-dev/infera/internal/modelcache"
)

// TestNewSource maps mount points and their options to sources, or to errors.
func TestNewSource(t *testing.T) {
	for _, tc := range []struct {
		mp      string
		options map[string]string
		want    string // String() of the source
		wantErr string // or a part of the error
		is      error
	}{
		{mp: "s3://bkt/models/sd", options: map[string]string{"fs.s3.endpoint": "http://127.0.0.1:9000"},
			want: "s3://bkt/models/sd at http://127.0.0.1:9000"},
		{mp: "s3://bkt/models/", options: map[string]string{"fs.s3.endpoint": "https://minio.example.com:9000"},
			want: "s3://bkt/models at https://minio.example.com:9000"},
		{mp: "s3://bkt", want: "s3://bkt at https://s3.amazonaws.com"},
		{mp: "s3://bkt/m", options: map[string]string{"fs.s3.endpoint": "s3.eu-west-1.amazonaws.com", "fs.s3.region": "eu-west-1"},
			want: "s3://bkt/m at https://s3.eu-west-1.amazonaws.com"},
		{mp: "oss://bkt/qwen", options: map[string]string{"fs.oss.endpoint": "oss-cn-hangzhou.aliyuncs.com"},
			want: "oss://bkt/qwen at https://oss-cn-hangzhou.aliyuncs.com"},
		{mp: "oss://bkt/qwen", options: map[string]string{"fs.oss.endpoint": "http://[::1]:9000"},
			want: "oss://bkt/qwen at http://[::1]:9000"},
		{mp: "oss://bkt/qwen", wantErr: "fs.oss.endpoint is required"},
		{mp: "oss://bkt/qwen", options: map[string]string{"fs.oss.endpoint": "ftp://x"}, wantErr: "want host[:port]"},
		{mp: "s3://bkt/qwen", options: map[string]string{"fs.s3.endpoint": "http://x/path"}, wantErr: "want host[:port]"},
		{mp: "s3:///qwen", wantErr: "no bucket"},
		{mp: "https://hf.example/org/model/resolve/main/model.safetensors?X-Amz-Signature=abc",
			want: "https://hf.example/org/model/resolve/main/model.safetensors"},
		{mp: "http://host/", wantErr: "file name"},
		{mp: "local:///data/models", want: "local:///data/models"},
		{mp: "local://data/models", wantErr: "absolute path"},
		{mp: "/mnt/nas/models", want: "local:///mnt/nas/models"},
		{mp: "pvc://claim/sub", is: modelcache.ErrUnsupported},
		{mp: "hdfs://namenode/models", is: modelcache.ErrUnsupported},
		{mp: "models", is: modelcache.ErrUnsupported},
	} {
		t.Run(tc.mp, func(t *testing.T) {
			src, err := modelcache.NewSource(fluid.Mount{MountPoint: tc.mp}, tc.options, nil)
			switch {
			case tc.is != nil:
				if !errors.Is(err, tc.is) {
					t.Fatalf("err = %v, want %v", err, tc.is)
				}
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case src.String() != tc.want:
				t.Errorf("String() = %q, want %q", src.String(), tc.want)
			}
		})
	}
}

// TestS3Addressing checks that IP and localhost endpoints are addressed path-style
// (/bucket/key) with no TLS.
func TestS3Addressing(t *testing.T) {
	var mu sync.Mutex
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.Host+" "+r.URL.Path)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`<Error><Code>NoSuchKey</Code></Error>`))
	}))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	for _, host := range []string{"127.0.0.1", "localhost"} {
		src, err := modelcache.NewSource(fluid.Mount{MountPoint: "s3://bkt/pre"},
			map[string]string{"fs.s3.endpoint": "http://" + host + ":" + port, "fs.s3.region": "us-east-1"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = src.Stat(context.Background(), "m.bin")
		closeIdle(src)
		if !errors.Is(err, modelcache.ErrNotFound) {
			t.Fatalf("%s: Stat: %v, want ErrNotFound", host, err)
		}
		mu.Lock()
		got := paths[len(paths)-1]
		mu.Unlock()
		if want := host + ":" + port + " /bkt/pre/m.bin"; got != want {
			t.Errorf("%s: request %q, want %q", host, got, want)
		}
	}
}
