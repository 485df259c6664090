package modelcache

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3Source is a bucket prefix read through the S3 API (AWS S3, OSS, MinIO, versitygw, ...).
// Its client does not retry: the Fetcher retries each range itself, with stall detection, and
// a caller of List or Stat retries on its own schedule.
type s3Source struct {
	client *minio.Client
	core   minio.Core
	tr     *http.Transport
	bucket string
	prefix string // "" or "dir/sub/", ending with a slash
	name   string // for String: "s3://bucket/prefix at http://127.0.0.1:9000"
}

func newS3Source(scheme, bucket, prefix string, options, secrets map[string]string) (*s3Source, error) {
	opt := func(name string) string {
		if v := secrets["fs."+scheme+"."+name]; v != "" {
			return v
		}
		return options["fs."+scheme+"."+name]
	}
	mp := scheme + "://" + bucket
	if prefix != "" {
		mp += "/" + prefix
	}
	endpoint := options["fs."+scheme+".endpoint"]
	if endpoint == "" {
		if scheme == "oss" {
			return nil, fmt.Errorf("modelcache: %s: options fs.oss.endpoint is required", mp)
		}
		endpoint = "s3.amazonaws.com"
	}
	secure := true
	host := endpoint
	if s, h, ok := strings.Cut(endpoint, "://"); ok {
		u, err := url.Parse(endpoint)
		if err != nil || (s != "http" && s != "https") || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return nil, fmt.Errorf("modelcache: %s: endpoint %q: want host[:port], http://host[:port] or https://host[:port]", mp, endpoint)
		}
		secure, host = s == "https", strings.TrimSuffix(h, "/")
	}
	if host == "" || strings.ContainsAny(host, "/?#@") {
		return nil, fmt.Errorf("modelcache: %s: endpoint %q: want host[:port], http://host[:port] or https://host[:port]", mp, endpoint)
	}
	lookup := minio.BucketLookupDNS
	hostname := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		hostname = h
	}
	hostname = strings.Trim(hostname, "[]")
	if net.ParseIP(hostname) != nil || hostname == "localhost" {
		lookup = minio.BucketLookupPath
	}
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("modelcache: %s: %w", mp, err)
	}
	tr.MaxIdleConnsPerHost = 64 // the Fetcher's streams reuse their connections
	var token string
	if scheme == "oss" {
		token = opt("securityToken")
	}
	client, err := minio.New(host, &minio.Options{
		Creds:        credentials.NewStaticV4(opt("accessKeyId"), opt("accessKeySecret"), token),
		Secure:       secure,
		Transport:    tr,
		Region:       options["fs."+scheme+".region"],
		BucketLookup: lookup,
		MaxRetries:   1,
	})
	if err != nil {
		return nil, fmt.Errorf("modelcache: %s: %w", mp, err)
	}
	scheme2 := "https"
	if !secure {
		scheme2 = "http"
	}
	if prefix != "" {
		prefix += "/"
	}
	return &s3Source{
		client: client, core: minio.Core{Client: client}, tr: tr,
		bucket: bucket, prefix: prefix,
		name: mp + " at " + scheme2 + "://" + host,
	}, nil
}

func (s *s3Source) String() string { return s.name }

// CloseIdleConnections closes the source's idle connections (as http.Client's method does).
func (s *s3Source) CloseIdleConnections() { s.tr.CloseIdleConnections() }

// List lists the prefix recursively. Keys that would leave the mount ("../x") and directory
// markers ("dir/") are left out. An empty prefix other than the bucket's root is ErrNotFound.
func (s *s3Source) List(ctx context.Context) ([]Object, error) {
	var objs []Object
	for info := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix, Recursive: true}) {
		if info.Err != nil {
			return nil, s.err("list", "", info.Err)
		}
		key := strings.TrimPrefix(info.Key, s.prefix)
		if !localKey(key) {
			continue
		}
		objs = append(objs, s.object(key, info))
	}
	if len(objs) == 0 && s.prefix != "" {
		return nil, fmt.Errorf("%s: list: no objects under the prefix: %w", s.name, ErrNotFound)
	}
	slices.SortFunc(objs, func(a, b Object) int { return strings.Compare(a.Key, b.Key) })
	return objs, nil
}

func (s *s3Source) Stat(ctx context.Context, key string) (Object, error) {
	if !localKey(key) {
		return Object{}, fmt.Errorf("%s: stat %q: invalid key: %w", s.name, key, ErrNotFound)
	}
	info, err := s.client.StatObject(ctx, s.bucket, s.prefix+key, minio.StatObjectOptions{Checksum: true})
	if err != nil {
		return Object{}, s.err("stat", key, err)
	}
	return s.object(key, info), nil
}

func (s *s3Source) ReadRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if !localKey(key) {
		return nil, fmt.Errorf("%s: read %q: invalid key: %w", s.name, key, ErrNotFound)
	}
	if n == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	var opts minio.GetObjectOptions
	switch {
	case n > 0:
		opts.SetRange(off, off+n-1)
	case off > 0:
		opts.SetRange(off, 0)
	}
	body, info, h, err := s.core.GetObject(ctx, s.bucket, s.prefix+key, opts)
	if err != nil {
		return nil, s.err("read", key, err)
	}
	if cr := h.Get("Content-Range"); off > 0 || n > 0 {
		if start, ok := contentRangeStart(cr); !ok || start != off {
			body.Close()
			return nil, fmt.Errorf("%s: read %q from %d: response has Content-Range %q", s.name, key, off, cr)
		}
	}
	return &etagBody{ReadCloser: body, etag: info.ETag}, nil
}

// contentRangeStart parses the first byte of "bytes first-last/size".
func contentRangeStart(cr string) (int64, bool) {
	spec, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return 0, false
	}
	first, _, ok := strings.Cut(spec, "-")
	v, err := strconv.ParseInt(first, 10, 64)
	return v, ok && err == nil
}

// etagBody is a response body that knows the ETag of the object it comes from.
type etagBody struct {
	io.ReadCloser
	etag string
}

func (b *etagBody) ETag() string { return b.etag }

var md5ETag = regexp.MustCompile(`^[0-9a-fA-F]{32}$`)

// object converts minio's ObjectInfo. A single-part upload's ETag is its MD5 (a multipart
// upload's is "md5-of-md5s-N"); x-amz-checksum-* values are full-object checksums unless the
// store says COMPOSITE (a checksum of part checksums, "...-N").
func (s *s3Source) object(key string, info minio.ObjectInfo) Object {
	o := Object{Key: key, Size: info.Size, ETag: strings.Trim(info.ETag, `"`), ModTime: info.LastModified}
	sums := map[string]string{}
	if md5ETag.MatchString(o.ETag) {
		sums["md5"] = strings.ToLower(o.ETag)
	}
	if !strings.EqualFold(info.ChecksumMode, "COMPOSITE") {
		for name, v := range map[string]string{
			"crc32": info.ChecksumCRC32, "crc32c": info.ChecksumCRC32C, "crc64nvme": info.ChecksumCRC64NVME,
			"sha1": info.ChecksumSHA1, "sha256": info.ChecksumSHA256,
		} {
			if b, err := base64.StdEncoding.DecodeString(v); err == nil && len(b) > 0 && !strings.Contains(v, "-") {
				sums[name] = hex.EncodeToString(b)
			}
		}
	}
	if len(sums) > 0 {
		o.Checksums = sums
	}
	return o
}

// err maps an S3 error to the package's sentinels and names the source, the operation, the
// HTTP status and the S3 error code. It never includes the server's message, which some
// stores fill with request details.
func (s *s3Source) err(op, key string, err error) error {
	what := s.name + ": " + op
	if key != "" {
		what += " " + strconv.Quote(key)
	}
	if ctxErr := contextErr(err); ctxErr != nil {
		return fmt.Errorf("%s: %w", what, ctxErr)
	}
	var resp minio.ErrorResponse
	if !errors.As(err, &resp) || (resp.StatusCode == 0 && resp.Code == "") {
		return fmt.Errorf("%s: %w", what, err)
	}
	status := fmt.Sprintf("%d %s", resp.StatusCode, resp.Code)
	switch {
	case resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized || accessCodes[resp.Code]:
		return fmt.Errorf("%s: %s: %w", what, status, ErrAccessDenied)
	case resp.StatusCode == http.StatusNotFound || resp.Code == "NoSuchBucket" || resp.Code == "NoSuchKey":
		return fmt.Errorf("%s: %s: %w", what, status, ErrNotFound)
	case resp.StatusCode == http.StatusPreconditionFailed:
		return fmt.Errorf("%s: %s: %w", what, status, ErrChanged)
	}
	return fmt.Errorf("%s: %s", what, status)
}

// accessCodes are the S3 error codes of wrong or missing credentials, whatever status comes
// with them: versitygw answers an unknown access key with 404 XAdminUserNotFound.
var accessCodes = map[string]bool{
	"AccessDenied": true, "InvalidAccessKeyId": true, "SignatureDoesNotMatch": true,
	"InvalidToken": true, "ExpiredToken": true, "AllAccessDisabled": true, "AccountProblem": true,
	"XAdminUserNotFound": true,
}

// contextErr returns the context error err wraps, if any.
func contextErr(err error) error {
	switch {
	case errors.Is(err, context.Canceled):
		return context.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return context.DeadlineExceeded
	}
	return nil
}
