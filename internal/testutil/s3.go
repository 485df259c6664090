package testutil

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// versitygwMissing is the failure when the S3 server is not installed: the tests that need it
// fail rather than skip.
const versitygwMissing = "versitygw not on PATH: run bash scripts/test.sh (it builds it into ~/.cache/infera/tools), " +
	"or go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// S3Server is a real S3 server on a loopback port: versitygw with its posix backend over a
// temporary directory, root credentials of its own, path-style addressing and no TLS.
type S3Server struct {
	tb     testing.TB
	bin    string
	dir    string
	addr   string // 127.0.0.1:PORT
	access string
	secret string
	client *minio.Client

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	log    *bytes.Buffer
}

// StartS3 starts an S3 server for the test and stops it (killing the process and waiting for
// it) when the test ends.
func StartS3(tb testing.TB) *S3Server {
	tb.Helper()
	bin, err := exec.LookPath("versitygw")
	if err != nil {
		tb.Fatal(versitygwMissing)
	}
	s := &S3Server{
		tb: tb, bin: bin, dir: tb.TempDir(),
		access: "INFERATESTACCESS", secret: "infera-test-secret-0123456789",
	}
	tb.Cleanup(s.Stop)
	// A free port can be taken by someone else before versitygw binds it: try a few.
	for try := 0; ; try++ {
		s.addr = freeLoopbackAddr(tb)
		err := s.start()
		if err == nil {
			break
		}
		if try == 4 {
			tb.Fatalf("start versitygw: %v", err)
		}
	}
	s.client, err = minio.New(s.addr, &minio.Options{
		Creds:        credentials.NewStaticV4(s.access, s.secret, ""),
		BucketLookup: minio.BucketLookupPath,
		// versitygw answers a bucket's creation with a stray 400 on a kept-alive connection,
		// which net/http logs as an unsolicited response.
		Transport: &http.Transport{DisableKeepAlives: true},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func freeLoopbackAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// start runs versitygw on s.addr and waits until it answers HTTP.
func (s *S3Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	log := &bytes.Buffer{}
	cmd := exec.Command(s.bin,
		"--access", s.access, "--secret", s.secret, "--port", s.addr,
		"--keep-alive", "--quiet", "posix", s.dir)
	cmd.Stdout, cmd.Stderr = log, log // one writer: exec copies both pipes with one goroutine
	// The server dies with the test binary even when the test is killed and no cleanup runs
	// (Pdeathsig fires when the thread that started it exits: Go ends a thread only when a
	// goroutine locked to it returns, and tests here lock none).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited, s.log = cmd, exited, log

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
	ready := Poll(15*time.Second, func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		resp, err := client.Get("http://" + s.addr + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	select {
	case <-exited:
		return fmt.Errorf("versitygw exited: %s", log)
	default:
	}
	if !ready {
		_ = cmd.Process.Kill()
		<-exited
		return fmt.Errorf("versitygw did not answer on %s within 15s: %s", s.addr, log)
	}
	return nil
}

// Stop kills the server and waits for it to exit; the directory and port stay for Restart.
func (s *S3Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// Restart starts the server again on the same port and directory (after Stop).
func (s *S3Server) Restart() {
	s.tb.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		s.tb.Fatalf("restart versitygw: %v", err)
	}
}

// Endpoint is the server's URL: "http://127.0.0.1:PORT".
func (s *S3Server) Endpoint() string { return "http://" + s.addr }

// Addr is the server's host and port.
func (s *S3Server) Addr() string { return s.addr }

// Access is the root access key.
func (s *S3Server) Access() string { return s.access }

// Secret is the root secret key.
func (s *S3Server) Secret() string { return s.secret }

// Dir is the directory the posix backend keeps buckets in.
func (s *S3Server) Dir() string { return s.dir }

// Client is a minio client of the root user.
func (s *S3Server) Client() *minio.Client { return s.client }

// MakeBucket creates a bucket.
func (s *S3Server) MakeBucket(bucket string) {
	s.tb.Helper()
	if err := s.client.MakeBucket(context.Background(), bucket, minio.MakeBucketOptions{}); err != nil {
		s.tb.Fatalf("make bucket %s: %v", bucket, err)
	}
}

// Put stores data at bucket/key in one PUT (a single-part upload: its ETag is its MD5) and
// returns the ETag.
func (s *S3Server) Put(bucket, key string, data []byte) string {
	s.tb.Helper()
	return s.PutReader(bucket, key, bytes.NewReader(data), int64(len(data)))
}

// PutReader is Put from a reader of size bytes.
func (s *S3Server) PutReader(bucket, key string, r io.Reader, size int64) string {
	s.tb.Helper()
	info, err := s.client.PutObject(context.Background(), bucket, key, r, size, minio.PutObjectOptions{DisableMultipart: true})
	if err != nil {
		s.tb.Fatalf("put %s/%s: %v", bucket, key, err)
	}
	return info.ETag
}
