package testutil

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Shaper is a loopback TCP proxy that limits what each connection carries from the server to
// a rate in bytes a second, as a remote object store gives one connection (requests pass as
// they come). Tests and benchmarks put it in front of a server to emulate a slow link; its
// pacing is the emulated link, not a wait for state.
type Shaper struct {
	l    net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	conn map[net.Conn]bool
}

// StartShaper proxies to upstream (host:port) at rate bytes a second per connection, until
// the test ends.
func StartShaper(tb testing.TB, upstream string, rate float64) *Shaper {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s := &Shaper{l: l, conn: map[net.Conn]bool{}}
	s.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				c.Close()
				continue
			}
			s.track(c, true)
			s.track(up, true)
			s.wg.Go(func() {
				_, _ = io.Copy(up, c)
				up.(*net.TCPConn).CloseWrite()
			})
			s.wg.Go(func() {
				pace(c, up, rate)
				c.Close()
				up.Close()
				s.track(c, false)
				s.track(up, false)
			})
		}
	})
	tb.Cleanup(func() {
		l.Close()
		s.mu.Lock()
		for c := range s.conn {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

// Addr is the proxy's host:port; Endpoint is it as an http:// URL.
func (s *Shaper) Addr() string     { return s.l.Addr().String() }
func (s *Shaper) Endpoint() string { return "http://" + s.Addr() }

func (s *Shaper) track(c net.Conn, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.conn[c] = true
	} else {
		delete(s.conn, c)
	}
}

// pace copies src to dst at most rate bytes a second, with bursts of one 64 KiB read.
func pace(dst io.Writer, src io.Reader, rate float64) {
	buf := make([]byte, 64<<10)
	next := time.Now()
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			if floor := time.Now().Add(-time.Millisecond); next.Before(floor) {
				next = floor // an idle connection saves up no more than a millisecond
			}
			next = next.Add(time.Duration(float64(n) / rate * float64(time.Second)))
			time.Sleep(time.Until(next)) // pacing: this is what makes the link slow
		}
		if err != nil {
			return
		}
	}
}
