package modelcache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/infera-dev/infera/internal/fluid"
)

// Object is one file of a dataset's source, by its path relative to the mount's root.
type Object struct {
	Key     string // relative path, slash-separated, no leading slash: "unet/model.safetensors"
	Size    int64
	ETag    string // as the store gives it, quotes removed; "" when it gives none
	ModTime time.Time
	// Checksums the store gives for the whole object: "md5" (a single-part ETag),
	// "crc32", "crc32c", "crc64nvme", "sha1", "sha256" (x-amz-checksum-*), hex encoded.
	Checksums map[string]string
}

// Source is where a dataset mount's files come from: an S3 or OSS bucket prefix, an HTTP(S)
// file, a local or NAS directory.
type Source interface {
	// List returns every object under the mount, sorted by Key.
	List(ctx context.Context) ([]Object, error)
	// Stat returns one object's current metadata (its ETag tells whether it changed).
	Stat(ctx context.Context, key string) (Object, error)
	// ReadRange reads n bytes of key from off (n < 0: to the end). The reader may also have
	// an ETag() string method giving the ETag of the object the bytes come from, as the
	// response carried it: the Fetcher uses it to notice an object replaced mid-fetch.
	ReadRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error)
	// String names the source for status and logs; it never contains a credential.
	String() string
}

// Local is a Source whose files are already on this machine (a local directory, a NAS mount,
// a resolved claim): they are served in place from Dir, never copied into the cache.
type Local interface {
	Source
	Dir() string
}

// Ranged is a Source that may not serve ranges (an HTTP server without Accept-Ranges: bytes).
// Ranged is known after a List or Stat; when it reports false, ReadRange serves only off 0 and
// the Fetcher downloads the object in one stream. Sources without this method serve ranges.
type Ranged interface {
	Source
	Ranged() bool
}

// Errors a Source returns (wrapped), so status can say what is wrong without the details of
// each store's API.
var (
	ErrAccessDenied = errors.New("access denied")     // 401/403: wrong or missing keys
	ErrNotFound     = errors.New("not found")         // bucket, prefix or object missing
	ErrChanged      = errors.New("object changed")    // the ETag moved during a fetch
	ErrCorrupt      = errors.New("checksum mismatch") // data read does not match its checksum
	// ErrUnsupported is a mount point NewSource cannot serve (a scheme such as hdfs:// or a
	// pvc:// the caller has not resolved to a directory).
	ErrUnsupported = errors.New("unsupported mount point")
)

// NewSource returns the Source of a Dataset mount. options are the mount's options merged
// with the dataset's sharedOptions (fluid.DatasetSpec.MountOptions); secrets are the values
// of its encryptOptions by option name, already read from their Secrets by the caller.
//
//   - oss://bucket/prefix: the S3 API of OSS at options fs.oss.endpoint, keys
//     fs.oss.accessKeyId and fs.oss.accessKeySecret (and fs.oss.securityToken if set).
//   - s3://bucket/prefix: fs.s3.endpoint (default s3.amazonaws.com), fs.s3.region,
//     fs.s3.accessKeyId and fs.s3.accessKeySecret, from secrets or, where a setup has no
//     secret, from options. Without keys requests are anonymous.
//   - http(s)://host/path/file: that one file, listed under its base name.
//   - local:///dir and /dir: the directory, served in place.
//
// An endpoint may start with http:// (a loopback or on-premises store: no TLS) or https://
// (the default). Hosts that are IP addresses or localhost are addressed path-style
// (http://host/bucket/key), others virtual-host style (bucket.host/key).
//
// pvc://claim/sub is not handled here: the caller resolves the claim to a directory and calls
// NewLocalSource. NewSource does no I/O.
func NewSource(m fluid.Mount, options, secrets map[string]string) (Source, error) {
	mp := m.MountPoint
	if strings.HasPrefix(mp, "/") {
		return NewLocalSource(mp)
	}
	scheme, rest, ok := strings.Cut(mp, "://")
	if !ok {
		return nil, fmt.Errorf("modelcache: mount point %q: %w: expected scheme://... or an absolute path", mp, ErrUnsupported)
	}
	switch scheme {
	case "s3", "oss":
		bucket, prefix, _ := strings.Cut(rest, "/")
		if bucket == "" {
			return nil, fmt.Errorf("modelcache: mount point %q: no bucket", mp)
		}
		return newS3Source(scheme, bucket, strings.Trim(prefix, "/"), options, secrets)
	case "http", "https":
		return NewHTTPSource(mp, nil)
	case "local":
		if !strings.HasPrefix(rest, "/") {
			return nil, fmt.Errorf("modelcache: mount point %q: local:// needs an absolute path (local:///dir)", mp)
		}
		dir, err := url.PathUnescape(rest)
		if err != nil {
			return nil, fmt.Errorf("modelcache: mount point %q: %w", mp, err)
		}
		return NewLocalSource(dir)
	case "pvc":
		return nil, fmt.Errorf("modelcache: mount point %q: %w: a pvc:// mount needs a PersistentVolumeClaim of that name in the dataset's namespace, annotated infera.dev/host-path with its directory on this machine", mp, ErrUnsupported)
	default:
		return nil, fmt.Errorf("modelcache: mount point %q: %w: scheme %s:// (served: s3, oss, http, https, local, absolute paths)", mp, ErrUnsupported, scheme)
	}
}

// localKey reports whether key is a relative, slash-separated path that stays inside the
// mount, as every Object.Key must be: a store may hold keys such as "../x" or "a//b", and the
// cache writes files named after keys.
func localKey(key string) bool {
	return key != "" && !strings.HasSuffix(key, "/") && filepath.IsLocal(filepath.FromSlash(key)) &&
		filepath.ToSlash(filepath.Clean(filepath.FromSlash(key))) == key
}
