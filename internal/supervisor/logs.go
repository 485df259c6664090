package supervisor

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
)

// maxLine is the longest line kept whole; longer output is written in pieces of this size.
const maxLine = 64 << 10

// logSink takes a replica's output: it redacts secret values line by line, keeps the last
// bytes in a ring and appends to a file that rotates to <file>.1.
type logSink struct {
	mu      sync.Mutex
	path    string
	f       *os.File
	size    int64
	maxFile int64
	ring    ring
	redact  [][]byte
	partial []byte
	last    []byte // last non-empty line
}

func newLogSink(path string, ringBytes int, maxFile int64, secrets []string) (*logSink, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("log: %w", err)
	}
	l := &logSink{path: path, f: f, size: st.Size(), maxFile: maxFile, ring: ring{buf: make([]byte, ringBytes)}}
	for _, s := range secrets {
		l.redact = append(l.redact, []byte(s))
	}
	return l, nil
}

// Write never fails: a replica must not block or die because its log cannot be written.
func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.partial = append(l.partial, p...)
			if len(l.partial) >= maxLine {
				l.emitLocked(l.partial)
				l.partial = l.partial[:0]
			}
			return n, nil
		}
		line := p[:i+1]
		if len(l.partial) > 0 {
			line = append(l.partial, line...)
		}
		l.emitLocked(line)
		l.partial = l.partial[:0]
		p = p[i+1:]
	}
	return n, nil
}

// flushPartial writes out an unterminated last line.
func (l *logSink) flushPartial() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.partial) > 0 {
		l.emitLocked(append(l.partial, '\n'))
		l.partial = l.partial[:0]
	}
}

func (l *logSink) emitLocked(line []byte) {
	for _, s := range l.redact {
		if bytes.Contains(line, s) {
			line = bytes.ReplaceAll(line, s, []byte("[redacted]"))
		}
	}
	if t := bytes.TrimSpace(line); len(t) > 0 {
		l.last = append(l.last[:0], t...)
	}
	l.ring.write(line)
	if l.f == nil {
		return
	}
	if l.size > 0 && l.size+int64(len(line)) > l.maxFile {
		l.rotateLocked()
	}
	if l.f != nil {
		n, _ := l.f.Write(line)
		l.size += int64(n)
	}
}

func (l *logSink) rotateLocked() {
	l.f.Close()
	l.f = nil
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		return
	}
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return
	}
	l.f, l.size = f, 0
}

// redactString replaces secret values in s (the log's own lines are redacted as written).
func (l *logSink) redactString(s string) string {
	for _, v := range l.redact {
		s = strings.ReplaceAll(s, string(v), "[redacted]")
	}
	return s
}

func (l *logSink) lastLine() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.last)
}

func (l *logSink) tail() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ring.bytes()
}

func (l *logSink) close() {
	l.flushPartial()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// ring keeps the last len(buf) bytes written.
type ring struct {
	buf  []byte
	next int
	full bool
}

func (r *ring) write(p []byte) {
	if len(r.buf) == 0 {
		return
	}
	if len(p) >= len(r.buf) {
		copy(r.buf, p[len(p)-len(r.buf):])
		r.next, r.full = 0, true
		return
	}
	n := copy(r.buf[r.next:], p)
	if n < len(p) {
		copy(r.buf, p[n:])
		r.full = true
	}
	r.next = (r.next + len(p)) % len(r.buf)
	if r.next == 0 && len(p) > 0 {
		r.full = true
	}
}

func (r *ring) bytes() []byte {
	if !r.full {
		return append([]byte(nil), r.buf[:r.next]...)
	}
	out := make([]byte, 0, len(r.buf))
	out = append(out, r.buf[r.next:]...)
	return append(out, r.buf[:r.next]...)
}

// openLog opens <path>.1 (if any) followed by <path>.
func openLog(path, replica string) (io.ReadCloser, error) {
	var files []*os.File
	for _, p := range []string{path + ".1", path} {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			closeAll(files)
			return nil, fmt.Errorf("supervisor: logs of %q: %w", replica, err)
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrUnknownReplica, replica)
	}
	readers := make([]io.Reader, len(files))
	for i, f := range files {
		readers[i] = f
	}
	return multiReadCloser{Reader: io.MultiReader(readers...), files: files}, nil
}

type multiReadCloser struct {
	io.Reader
	files []*os.File
}

func (m multiReadCloser) Close() error { closeAll(m.files); return nil }

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}
