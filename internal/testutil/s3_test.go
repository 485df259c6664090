package testutil

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"io"
	"net"
	"testing"

	"github.com/minio/minio-go/v7"
)

func TestS3Server(t *testing.T) {
	s := StartS3(t)
	if want := "http://" + s.Addr(); s.Endpoint() != want {
		t.Errorf("Endpoint() = %q, want %q", s.Endpoint(), want)
	}
	if host, _, err := net.SplitHostPort(s.Addr()); err != nil || host != "127.0.0.1" {
		t.Errorf("Addr() = %q, want 127.0.0.1:PORT", s.Addr())
	}
	s.MakeBucket("models")
	data := []byte("hello, versitygw")
	etag := s.Put("models", "dir/hello.txt", data)
	if sum := md5.Sum(data); etag != hex.EncodeToString(sum[:]) {
		t.Errorf("ETag of a single-part PUT = %q, want its MD5 %x", etag, sum)
	}
	read := func() []byte {
		t.Helper()
		obj, err := s.Client().GetObject(context.Background(), "models", "dir/hello.txt", minio.GetObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer obj.Close()
		got, err := io.ReadAll(obj)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := read(); !bytes.Equal(got, data) {
		t.Fatalf("read back %q, want %q", got, data)
	}

	addr := s.Addr()
	s.Stop()
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Fatal("the server still accepts connections after Stop")
	}
	s.Restart()
	if s.Addr() != addr {
		t.Errorf("Restart moved the server from %s to %s", addr, s.Addr())
	}
	if got := read(); !bytes.Equal(got, data) {
		t.Fatalf("read back after Restart %q, want %q", got, data)
	}
}
