package modelcache_test

import (
	"context"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/infera-dev/infera/internal/fluid"
	"github.com/infera-dev/infera/internal/modelcache"
)

// TestS3Source reads a prefix of a bucket through the s3:// and oss:// schemes (both the S3
// API, path-style at an http:// loopback endpoint) and fetches from it.
func TestS3Source(t *testing.T) {
	checkFetchLeaks(t)
	r := newS3Rig(t)
	files := map[string][]byte{
		"sd/unet/model.safetensors": randomBytes(30_000, 1),
		"sd/vae/model.safetensors":  randomBytes(5_000, 2),
		"sd/model_index.json":       []byte(`{"_class_name": "StableDiffusionPipeline"}`),
		"other/x.bin":               []byte("not under the prefix"),
	}
	for key, data := range files {
		r.put(key, data)
	}
	wantKeys := []string{"model_index.json", "unet/model.safetensors", "vae/model.safetensors"}
	for _, scheme := range []string{"s3", "oss"} {
		t.Run(scheme, func(t *testing.T) {
			src := r.source(scheme, "sd", "")
			if want := scheme + "://models/sd at " + r.srv.Endpoint(); src.String() != want {
				t.Errorf("String() = %q, want %q", src.String(), want)
			}
			ctx := context.Background()
			objs, err := src.List(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, o := range objs {
				keys = append(keys, o.Key)
				data := files["sd/"+o.Key]
				if o.Size != int64(len(data)) || o.Checksums["md5"] != hexSum("md5", data) || o.ETag != o.Checksums["md5"] {
					t.Errorf("List: %s: size %d ETag %q checksums %v; want size %d md5 %s", o.Key, o.Size, o.ETag, o.Checksums, len(data), hexSum("md5", data))
				}
			}
			if !slices.Equal(keys, wantKeys) {
				t.Errorf("List keys %q, want %q", keys, wantKeys)
			}

			data := files["sd/unet/model.safetensors"]
			obj := stat(t, src, "unet/model.safetensors")
			// versitygw stores a CRC64NVME of each object beside its MD5: both must be what
			// this package computes, or every fetch would read as corrupt.
			want := map[string]string{"md5": hexSum("md5", data), "crc64nvme": hexSum("crc64nvme", data)}
			if obj.Size != int64(len(data)) || !mapsEqual(obj.Checksums, want) {
				t.Errorf("Stat: size %d checksums %v, want %d %v", obj.Size, obj.Checksums, len(data), want)
			}

			for _, rg := range []struct{ off, n int64 }{{0, 10}, {100, 1000}, {29_990, 10}, {29_000, -1}, {0, -1}, {5, 0}} {
				rc, err := src.ReadRange(ctx, "unet/model.safetensors", rg.off, rg.n)
				if err != nil {
					t.Fatalf("ReadRange(%d, %d): %v", rg.off, rg.n, err)
				}
				got, err := io.ReadAll(rc)
				rc.Close()
				end := int64(len(data))
				if rg.n >= 0 {
					end = rg.off + rg.n
				}
				if err != nil || string(got) != string(data[rg.off:end]) {
					t.Errorf("ReadRange(%d, %d): %d bytes, %v; want %d bytes", rg.off, rg.n, len(got), err, end-rg.off)
				}
			}

			dst := filepath.Join(t.TempDir(), "unet", "model.safetensors")
			f := modelcache.Fetcher{ChunkSize: 4096, Streams: 4}
			if err := f.Fetch(ctx, src, obj, dst, nil); err != nil {
				t.Fatal(err)
			}
			checkFetched(t, dst, data)
		})
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestS3Errors maps the store's refusals to the package's errors, and says which source and
// which status without giving away a key.
func TestS3Errors(t *testing.T) {
	checkFetchLeaks(t)
	r := newS3Rig(t)
	r.put("sd/model.bin", []byte("weights"))
	const wrongAccess, wrongSecret = "WRONGACCESSKEY4711", "wrong-secret-0815-do-not-print"
	for _, tc := range []struct {
		name           string
		scheme, mp     string
		access, secret string
		key            string // Stat this key; "" List
		want           error
		wantMsg        []string
	}{
		// versitygw answers an unknown access key with 404 XAdminUserNotFound (AWS: 403
		// InvalidAccessKeyId): the code decides, and the message gives the status as it came.
		{name: "wrong access key", scheme: "s3", mp: "s3://models/sd", access: wrongAccess, secret: wrongSecret,
			want: modelcache.ErrAccessDenied, wantMsg: []string{"s3://models/sd at " + r.srv.Endpoint(), "404 XAdminUserNotFound"}},
		{name: "wrong secret", scheme: "s3", mp: "s3://models/sd", access: r.srv.Access(), secret: wrongSecret,
			want: modelcache.ErrAccessDenied, wantMsg: []string{"s3://models/sd at " + r.srv.Endpoint(), "403", "SignatureDoesNotMatch"}},
		{name: "wrong secret stat", scheme: "oss", mp: "oss://models/sd", access: r.srv.Access(), secret: wrongSecret, key: "model.bin",
			want: modelcache.ErrAccessDenied, wantMsg: []string{"oss://models/sd at " + r.srv.Endpoint(), "403"}},
		{name: "wrong access key oss", scheme: "oss", mp: "oss://models/sd", access: wrongAccess, secret: wrongSecret,
			want: modelcache.ErrAccessDenied, wantMsg: []string{"oss://models/sd at " + r.srv.Endpoint(), "404 XAdminUserNotFound"}},
		{name: "no keys", scheme: "s3", mp: "s3://models/sd",
			want: modelcache.ErrAccessDenied, wantMsg: []string{"s3://models/sd at " + r.srv.Endpoint(), "403"}},
		{name: "missing bucket", scheme: "s3", mp: "s3://nothere/sd", access: r.srv.Access(), secret: r.srv.Secret(),
			want: modelcache.ErrNotFound, wantMsg: []string{"s3://nothere/sd at " + r.srv.Endpoint(), "404", "NoSuchBucket"}},
		{name: "missing bucket stat", scheme: "oss", mp: "oss://nothere", access: r.srv.Access(), secret: r.srv.Secret(), key: "model.bin",
			want: modelcache.ErrNotFound, wantMsg: []string{"oss://nothere at " + r.srv.Endpoint(), "404"}},
		{name: "missing prefix", scheme: "s3", mp: "s3://models/empty", access: r.srv.Access(), secret: r.srv.Secret(),
			want: modelcache.ErrNotFound, wantMsg: []string{"s3://models/empty at " + r.srv.Endpoint()}},
		{name: "missing key", scheme: "s3", mp: "s3://models/sd", access: r.srv.Access(), secret: r.srv.Secret(), key: "nothere.bin",
			want: modelcache.ErrNotFound, wantMsg: []string{"s3://models/sd at " + r.srv.Endpoint(), `"nothere.bin"`, "404"}},
		{name: "key leaving the mount", scheme: "s3", mp: "s3://models/sd", access: r.srv.Access(), secret: r.srv.Secret(), key: "../sd/model.bin",
			want: modelcache.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			secrets := map[string]string{}
			if tc.access != "" {
				secrets["fs."+tc.scheme+".accessKeyId"] = tc.access
				secrets["fs."+tc.scheme+".accessKeySecret"] = tc.secret
			}
			src, err := modelcache.NewSource(fluid.Mount{MountPoint: tc.mp},
				map[string]string{"fs." + tc.scheme + ".endpoint": r.srv.Endpoint()}, secrets)
			if err != nil {
				t.Fatal(err)
			}
			defer closeIdle(src)
			if tc.key != "" {
				_, err = src.Stat(context.Background(), tc.key)
			} else {
				_, err = src.List(context.Background())
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			msg := err.Error()
			for _, w := range tc.wantMsg {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
			for _, secret := range []string{wrongAccess, wrongSecret, r.srv.Access(), r.srv.Secret()} {
				if strings.Contains(msg, secret) {
					t.Errorf("error %q gives away %q", msg, secret)
				}
			}
		})
	}
}

// TestS3KeysInOptions reads keys from options when a setup has no secret.
func TestS3KeysInOptions(t *testing.T) {
	checkFetchLeaks(t)
	r := newS3Rig(t)
	r.put("m.bin", []byte("x"))
	src, err := modelcache.NewSource(fluid.Mount{MountPoint: "s3://models"}, map[string]string{
		"fs.s3.endpoint": r.srv.Endpoint(), "fs.s3.region": "us-east-1",
		"fs.s3.accessKeyId": r.srv.Access(), "fs.s3.accessKeySecret": r.srv.Secret(),
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeIdle(src)
	objs, err := src.List(context.Background())
	if err != nil || len(objs) != 1 || objs[0].Key != "m.bin" {
		t.Fatalf("List = %v, %v; want m.bin", objs, err)
	}
}
