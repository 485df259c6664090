package modelcache

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
)

// HTTPSource is one file at an http:// or https:// URL, listed under its base name. It reads
// ranges when the server answers Accept-Ranges: bytes (or 206 to a ranged probe) and otherwise
// serves the file as one stream from off 0 (see Ranged).
type HTTPSource struct {
	client  *http.Client
	url     string // as given, with any query: a presigned URL's signature lives there
	key     string // the base name, its only key
	display string // scheme://host/path: no user info, no query
	ranged  atomic.Int32
}

// Values of HTTPSource.ranged.
const (
	rangesUnknown int32 = iota
	rangesServed
	rangesNotServed
)

// NewHTTPSource returns the Source of the file at rawURL, read with client (nil: a client of
// its own that keeps enough idle connections for the Fetcher's streams).
func NewHTTPSource(rawURL string, client *http.Client) (*HTTPSource, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("modelcache: invalid URL: %w", redactURLError(err, "(redacted)"))
	}
	display := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("modelcache: mount point %s: want http(s)://host/path/file", display)
	}
	key := path.Base(u.Path)
	if !localKey(key) {
		return nil, fmt.Errorf("modelcache: mount point %s: the URL's path must end with a file name", display)
	}
	if client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 64
		tr.DisableCompression = true
		client = &http.Client{Transport: tr}
	}
	return &HTTPSource{client: client, url: rawURL, key: key, display: display}, nil
}

func (s *HTTPSource) String() string { return s.display }

// Ranged reports whether the server serves byte ranges, as the last List or Stat found;
// false before either.
func (s *HTTPSource) Ranged() bool { return s.ranged.Load() == rangesServed }

// CloseIdleConnections closes the client's idle connections.
func (s *HTTPSource) CloseIdleConnections() { s.client.CloseIdleConnections() }

// List returns the one file.
func (s *HTTPSource) List(ctx context.Context) ([]Object, error) {
	o, err := s.Stat(ctx, s.key)
	if err != nil {
		return nil, err
	}
	return []Object{o}, nil
}

// Stat asks with HEAD; a server that refuses HEAD (a presigned URL is signed for GET only) is
// asked for its first byte instead.
func (s *HTTPSource) Stat(ctx context.Context, key string) (Object, error) {
	if key != s.key {
		return Object{}, fmt.Errorf("%s: stat %q: %w", s.display, key, ErrNotFound)
	}
	resp, err := s.do(ctx, http.MethodHead, "")
	if err != nil {
		return Object{}, fmt.Errorf("%s: stat: %w", s.display, err)
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusForbidden, http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return s.statByGET(ctx)
	case http.StatusOK:
	default:
		return Object{}, s.statusErr("stat", resp.StatusCode)
	}
	if resp.ContentLength < 0 {
		return Object{}, fmt.Errorf("%s: stat: the server gives no Content-Length", s.display)
	}
	if strings.Contains(strings.ToLower(resp.Header.Get("Accept-Ranges")), "bytes") {
		s.ranged.Store(rangesServed)
	} else {
		s.ranged.Store(rangesNotServed)
	}
	return s.object(resp.ContentLength, resp.Header, true), nil
}

func (s *HTTPSource) statByGET(ctx context.Context) (Object, error) {
	resp, err := s.do(ctx, http.MethodGet, "bytes=0-0")
	if err != nil {
		return Object{}, fmt.Errorf("%s: stat: %w", s.display, err)
	}
	resp.Body.Close() // one byte, or the whole file from a server without ranges: not read
	switch resp.StatusCode {
	case http.StatusPartialContent:
		cr := resp.Header.Get("Content-Range")
		_, total, _ := strings.Cut(cr, "/")
		size, err := strconv.ParseInt(total, 10, 64)
		if err != nil {
			return Object{}, fmt.Errorf("%s: stat: response has Content-Range %q", s.display, cr)
		}
		s.ranged.Store(rangesServed)
		return s.object(size, resp.Header, false), nil
	case http.StatusOK:
		if resp.ContentLength < 0 {
			return Object{}, fmt.Errorf("%s: stat: the server gives no Content-Length", s.display)
		}
		s.ranged.Store(rangesNotServed)
		return s.object(resp.ContentLength, resp.Header, true), nil
	}
	return Object{}, s.statusErr("stat", resp.StatusCode)
}

func (s *HTTPSource) ReadRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if key != s.key {
		return nil, fmt.Errorf("%s: read %q: %w", s.display, key, ErrNotFound)
	}
	if n == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	if off > 0 && s.ranged.Load() == rangesNotServed {
		return nil, fmt.Errorf("%s: read from %d: %w", s.display, off, errNoRanges)
	}
	var rng string
	switch {
	case n > 0 && (off > 0 || s.Ranged()):
		rng = fmt.Sprintf("bytes=%d-%d", off, off+n-1)
	case off > 0:
		rng = fmt.Sprintf("bytes=%d-", off)
	}
	resp, err := s.do(ctx, http.MethodGet, rng)
	if err != nil {
		return nil, fmt.Errorf("%s: read: %w", s.display, err)
	}
	etag := trimETag(resp.Header.Get("ETag"))
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if start, ok := contentRangeStart(resp.Header.Get("Content-Range")); !ok || start != off {
			resp.Body.Close()
			return nil, fmt.Errorf("%s: read from %d: response has Content-Range %q", s.display, off, resp.Header.Get("Content-Range"))
		}
		return &etagBody{ReadCloser: resp.Body, etag: etag}, nil
	case http.StatusOK:
		if off > 0 {
			resp.Body.Close()
			s.ranged.Store(rangesNotServed)
			return nil, fmt.Errorf("%s: read from %d: %w", s.display, off, errNoRanges)
		}
		body := resp.Body
		if n > 0 {
			body = limitedBody{Reader: io.LimitReader(resp.Body, n), Closer: resp.Body}
		}
		return &etagBody{ReadCloser: body, etag: etag}, nil
	}
	resp.Body.Close()
	return nil, s.statusErr("read", resp.StatusCode)
}

// errNoRanges is a read past off 0 from a server that serves no ranges.
var errNoRanges = errors.New("the server does not serve byte ranges")

type limitedBody struct {
	io.Reader
	io.Closer
}

func (s *HTTPSource) do(ctx context.Context, method, rng string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.url, nil)
	if err != nil {
		return nil, redactURLError(err, s.display)
	}
	// Bytes as stored: a transparently decompressed body has another size and checksum.
	req.Header.Set("Accept-Encoding", "identity")
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, redactURLError(err, s.display)
	}
	return resp, nil
}

// redactURLError replaces the URL in a *url.Error (which would print a presigned URL's
// signature) with display.
func redactURLError(err error, display string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = display
	}
	return err
}

func (s *HTTPSource) statusErr(op string, code int) error {
	status := fmt.Sprintf("%d %s", code, http.StatusText(code))
	switch code {
	case http.StatusUnauthorized, http.StatusForbidden:
		return fmt.Errorf("%s: %s: %s: %w", s.display, op, status, ErrAccessDenied)
	case http.StatusNotFound, http.StatusGone:
		return fmt.Errorf("%s: %s: %s: %w", s.display, op, status, ErrNotFound)
	case http.StatusPreconditionFailed:
		return fmt.Errorf("%s: %s: %s: %w", s.display, op, status, ErrChanged)
	}
	return fmt.Errorf("%s: %s: unexpected status %s", s.display, op, status)
}

// object reads the file's metadata from a response's headers; whole says the response is
// about the whole file (Content-MD5 of a partial response covers only the part).
func (s *HTTPSource) object(size int64, h http.Header, whole bool) Object {
	o := Object{Key: s.key, Size: size, ETag: trimETag(h.Get("ETag"))}
	if t, err := http.ParseTime(h.Get("Last-Modified")); err == nil {
		o.ModTime = t
	}
	sums := map[string]string{}
	add := func(name, b64 string) {
		if b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64)); err == nil && len(b) > 0 {
			sums[name] = hex.EncodeToString(b)
		}
	}
	// An S3 or OSS object behind a plain URL (public bucket, presigned URL, CDN in front of
	// one): its single-part ETag is its MD5, as through the S3 API.
	if (h.Get("X-Amz-Request-Id") != "" || h.Get("X-Oss-Request-Id") != "") && md5ETag.MatchString(o.ETag) {
		sums["md5"] = strings.ToLower(o.ETag)
	}
	for _, name := range []string{"crc32", "crc32c", "crc64nvme", "sha1", "sha256"} {
		if v := h.Get("X-Amz-Checksum-" + name); v != "" && !strings.Contains(v, "-") {
			add(name, v)
		}
	}
	if whole {
		if v := h.Get("Content-MD5"); v != "" {
			add("md5", v)
		}
		// Google Cloud Storage: x-goog-hash: crc32c=..., md5=...
		for _, v := range h.Values("X-Goog-Hash") {
			for part := range strings.SplitSeq(v, ",") {
				if name, b64, ok := strings.Cut(strings.TrimSpace(part), "="); ok && (name == "md5" || name == "crc32c") {
					add(name, b64)
				}
			}
		}
	}
	if len(sums) > 0 {
		o.Checksums = sums
	}
	return o
}

// trimETag removes an ETag's quotes, keeping a weak ETag's W/ marker.
func trimETag(etag string) string {
	if rest, ok := strings.CutPrefix(etag, "W/"); ok {
		return "W/" + strings.Trim(rest, `"`)
	}
	return strings.Trim(etag, `"`)
}
