package testutil

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestShaper checks the bytes pass unchanged and no faster than the rate.
func TestShaper(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	payload := make([]byte, 256<<10)
	for i := range payload {
		payload[i] = byte(i)
	}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write(payload)
		c.Close()
	}()
	s := StartShaper(t, ln.Addr().String(), 1<<20) // 1 MiB/s: 256 KiB takes at least ~250 ms
	c, err := net.Dial("tcp", s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != string(payload) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("256 KiB at 1 MiB/s took %v: not shaped", took)
	}
}
