package modelcache_test

import (
	"context"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/infera-dev/infera/internal/fluid"
	"github.com/infera-dev/infera/internal/modelcache"
	"github.com/infera-dev/infera/internal/testutil"
)

// BenchmarkFetch downloads one large object from versitygw on loopback, side by side:
//
//   - get: one sequential GET (minio-go GetObject, io.Copy to a file), the anchor;
//   - fetcher: the Fetcher with its defaults (16 streams of 16 MiB ranges), verifying the
//     CRC64NVME versitygw keeps of each object (CRCs of chunks computed as they arrive);
//   - fetcher-md5: the same verifying only the MD5 (the ETag), hashed in order from the file;
//   - fetcher-noverify: the same without checksum verification, to show what it costs;
//   - rclone: rclone copyto with --multi-thread-streams 16 (Debian's rclone; the benchmark
//     fails when it is not on PATH: apt-get install rclone);
//
// each directly ("direct/...") and through a proxy that limits every connection to 100 MB/s
// ("shaped/..."), as a remote store gives one connection. Each reports MB/s.
//
//	go test -run '^$' -bench BenchmarkFetch -benchtime 2x ./internal/modelcache/
//
// INFERA_BENCH_MB sets the object's size (default 256), INFERA_BENCH_STREAM_MBPS the shaped
// rate of one connection (default 100), INFERA_BENCH_DIR where the files are written (default a
// temporary directory; TMPDIR=/dev/shm puts the server's files there too). On a disk the
// Fetcher's times include the fsync it does before the rename, which get and rclone skip.
// rclone by hand against the same server:
//
//	RCLONE_CONFIG_X_TYPE=s3 RCLONE_CONFIG_X_PROVIDER=Other \
//	RCLONE_CONFIG_X_ENDPOINT=http://127.0.0.1:PORT RCLONE_CONFIG_X_FORCE_PATH_STYLE=true \
//	RCLONE_CONFIG_X_ACCESS_KEY_ID=KEY RCLONE_CONFIG_X_SECRET_ACCESS_KEY=SECRET \
//	rclone copyto X:bench/big.bin /tmp/big.bin --multi-thread-streams 16 --multi-thread-cutoff 1M
func BenchmarkFetch(b *testing.B) {
	size := int64(envInt(b, "INFERA_BENCH_MB", 256)) << 20
	rate := float64(envInt(b, "INFERA_BENCH_STREAM_MBPS", 100)) * 1e6
	srv := testutil.StartS3(b)
	srv.MakeBucket("bench")
	srv.PutReader("bench", "big.bin", io.LimitReader(rand.NewChaCha8([32]byte{1}), size), size)
	// Write the object out now: its writeback would otherwise slow whichever fetch comes first.
	syscall.Sync()
	shaper := testutil.StartShaper(b, srv.Addr(), rate)

	for _, link := range []struct{ name, endpoint string }{
		{"direct", srv.Endpoint()},
		{"shaped", shaper.Endpoint()},
	} {
		for _, tool := range []struct {
			name  string
			fetch func(b *testing.B, endpoint, dst string)
		}{
			{"get", benchGET(srv)},
			{"fetcher", benchFetcher(srv, modelcache.Fetcher{}, false)},
			{"fetcher-md5", benchFetcher(srv, modelcache.Fetcher{}, true)},
			{"fetcher-noverify", benchFetcher(srv, modelcache.Fetcher{NoVerify: true}, false)},
			{"rclone", benchRclone(srv)},
		} {
			b.Run(link.name+"/"+tool.name, func(b *testing.B) {
				dir := os.Getenv("INFERA_BENCH_DIR")
				if dir == "" {
					dir = b.TempDir()
				}
				dst := filepath.Join(dir, "big.bin")
				for b.Loop() {
					tool.fetch(b, link.endpoint, dst)
					if fi, err := os.Stat(dst); err != nil || fi.Size() != size {
						b.Fatalf("%s: %v, want %d bytes", dst, err, size)
					}
					if err := os.Remove(dst); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(size)*float64(b.N)/b.Elapsed().Seconds()/1e6, "MB/s")
			})
		}
	}
}

func envInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

func benchGET(srv *testutil.S3Server) func(b *testing.B, endpoint, dst string) {
	return func(b *testing.B, endpoint, dst string) {
		tr, err := minio.DefaultTransport(false)
		if err != nil {
			b.Fatal(err)
		}
		defer tr.CloseIdleConnections()
		c, err := minio.New(strings.TrimPrefix(endpoint, "http://"), &minio.Options{
			Creds:     credentials.NewStaticV4(srv.Access(), srv.Secret(), ""),
			Transport: tr, BucketLookup: minio.BucketLookupPath, Region: "us-east-1",
		})
		if err != nil {
			b.Fatal(err)
		}
		obj, err := c.GetObject(context.Background(), "bench", "big.bin", minio.GetObjectOptions{})
		if err != nil {
			b.Fatal(err)
		}
		defer obj.Close()
		f, err := os.Create(dst)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(f, obj); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func benchFetcher(srv *testutil.S3Server, f modelcache.Fetcher, md5Only bool) func(b *testing.B, endpoint, dst string) {
	return func(b *testing.B, endpoint, dst string) {
		src, err := modelcache.NewSource(fluid.Mount{MountPoint: "s3://bench"},
			map[string]string{"fs.s3.endpoint": endpoint, "fs.s3.region": "us-east-1"},
			map[string]string{"fs.s3.accessKeyId": srv.Access(), "fs.s3.accessKeySecret": srv.Secret()})
		if err != nil {
			b.Fatal(err)
		}
		defer closeIdle(src)
		if md5Only {
			src = md5OnlySource{src}
		}
		if err := f.Fetch(context.Background(), src, modelcache.Object{Key: "big.bin"}, dst, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func benchRclone(srv *testutil.S3Server) func(b *testing.B, endpoint, dst string) {
	return func(b *testing.B, endpoint, dst string) {
		bin, err := exec.LookPath("rclone")
		if err != nil {
			b.Fatal("rclone not on PATH: apt-get install rclone")
		}
		cmd := exec.Command(bin, "copyto", "X:bench/big.bin", dst,
			"--multi-thread-streams", "16", "--multi-thread-cutoff", "1M", "-q")
		// AWS_CA_BUNDLE, where set, makes rclone's AWS SDK fail on its own transport; the
		// endpoint is http:// anyway.
		env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "AWS_CA_BUNDLE=") })
		cmd.Env = append(env,
			"RCLONE_CONFIG=/dev/null",
			"RCLONE_CONFIG_X_TYPE=s3", "RCLONE_CONFIG_X_PROVIDER=Other",
			"RCLONE_CONFIG_X_ENDPOINT="+endpoint, "RCLONE_CONFIG_X_FORCE_PATH_STYLE=true",
			"RCLONE_CONFIG_X_ACCESS_KEY_ID="+srv.Access(), "RCLONE_CONFIG_X_SECRET_ACCESS_KEY="+srv.Secret())
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("rclone: %v\n%s", err, out)
		}
	}
}

// md5OnlySource hides every checksum of its objects but the MD5.
type md5OnlySource struct{ modelcache.Source }

func (s md5OnlySource) Stat(ctx context.Context, key string) (modelcache.Object, error) {
	o, err := s.Source.Stat(ctx, key)
	o.Checksums = map[string]string{"md5": o.Checksums["md5"]}
	return o, err
}
