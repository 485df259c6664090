package lazymount

import (
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"
)

// Options are the mount's settings. Start from DefaultOptions or ParseFuseArgs; the zero value
// is valid but caches nothing (zero timeouts) and has the kernel's minimum of background reads.
type Options struct {
	// KernelCache keeps the kernel's page cache of a file across opens (-okernel_cache, and
	// -oauto_cache, which is the same thing for files that never change). Without it every open
	// drops what the kernel cached of that file, as libfuse does.
	KernelCache bool
	// AttrTimeout is how long the kernel may cache a file's attributes (-oattr_timeout=SECONDS).
	AttrTimeout time.Duration
	// EntryTimeout is how long the kernel may cache a name lookup (-oentry_timeout=SECONDS).
	EntryTimeout time.Duration
	// NegativeTimeout is how long the kernel may cache that a name does not exist
	// (-onegative_timeout=SECONDS).
	NegativeTimeout time.Duration
	// AllowOther lets users other than the mounting one (root) use the mount (-oallow_other).
	// File modes are enforced by the kernel either way (default_permissions).
	AllowOther bool
	// MaxBackground bounds the kernel's asynchronous reads in flight on the mount
	// (-omax_background=N). Every buffered read is one of these, and a read of a range not yet
	// fetched holds its slot until the range arrives, so this bounds how many withheld ranges
	// can be waited on before reads of cached data queue behind them. Zero means the kernel's
	// default (12); DefaultOptions sets 256.
	MaxBackground int
	// CongestionThreshold is the number of background reads at which the kernel throttles new
	// ones (-ocongestion_threshold=N); zero means three quarters of MaxBackground.
	CongestionThreshold int
	// MaxReadAhead is the mount's readahead window in bytes (-omax_readahead=N), set through
	// its bdi's read_ahead_kb so that it can exceed the kernel's default of 128 KiB: a
	// sequential reader's READs are then up to 1 MiB (FUSE's largest) instead of 128 KiB.
	// Zero leaves the kernel's default. A read waits for its whole READ, readahead included.
	MaxReadAhead int
	// Name is the mount's source as /proc/mounts and df show it; empty means "lazymount".
	Name string
	// Logger receives read failures and go-fuse's own complaints; nil discards them.
	Logger *slog.Logger
}

// DefaultOptions returns libfuse's defaults (one-second attribute and entry caching, no
// negative caching, no kernel_cache) except for two: MaxBackground is 256 rather than 12, so
// that replicas waiting on ranges still being fetched do not stall reads of cached ones, and
// MaxReadAhead is 1 MiB rather than 128 KiB, so that sequential loading takes 1 MiB READs.
func DefaultOptions() Options {
	return Options{
		AttrTimeout:   time.Second,
		EntryTimeout:  time.Second,
		MaxBackground: 256,
		MaxReadAhead:  1 << 20,
	}
}

// ParseFuseArgs maps a Fluid runtime's fuse args onto Options, starting from DefaultOptions.
// It understands -oOPT[,OPT...], "-o OPT[,OPT...]" and Alluxio's --fuse-opts=OPT[,OPT...]; the
// options that mean something for this mount are kernel_cache, auto_cache, attr_timeout,
// entry_timeout, negative_timeout, allow_other, max_background, congestion_threshold,
// max_readahead and ro (a no-op: the mount is always read-only). Everything else (other
// options, options with a malformed value, rw, max_readahead=0, which would turn readahead off
// and make every read a 4 KiB one, positional args and other flags) is ignored and returned,
// each option as -oOPT, for the caller to report.
func ParseFuseArgs(args []string) (Options, []string) {
	o := DefaultOptions()
	var ignored []string
	for i := 0; i < len(args); i++ {
		var list string
		switch a := args[i]; {
		case a == "-o" && i+1 < len(args):
			i++
			list = args[i]
		case strings.HasPrefix(a, "-o") && len(a) > 2:
			list = a[2:]
		case strings.HasPrefix(a, "--fuse-opts="):
			list = strings.TrimPrefix(a, "--fuse-opts=")
		default:
			ignored = append(ignored, a)
			continue
		}
		for opt := range strings.SplitSeq(list, ",") {
			if opt != "" && !o.apply(opt) {
				ignored = append(ignored, "-o"+opt)
			}
		}
	}
	return o, ignored
}

// apply sets the field one fuse option names and reports whether it knew the option and its
// value.
func (o *Options) apply(opt string) bool {
	key, val, hasVal := strings.Cut(opt, "=")
	if !hasVal {
		switch key {
		case "kernel_cache", "auto_cache":
			o.KernelCache = true
		case "allow_other":
			o.AllowOther = true
		case "ro":
		default:
			return false
		}
		return true
	}
	var seconds *time.Duration
	var count *int
	switch key {
	case "attr_timeout":
		seconds = &o.AttrTimeout
	case "entry_timeout":
		seconds = &o.EntryTimeout
	case "negative_timeout":
		seconds = &o.NegativeTimeout
	case "max_background":
		count = &o.MaxBackground
	case "congestion_threshold":
		count = &o.CongestionThreshold
	case "max_readahead":
		count = &o.MaxReadAhead
	default:
		return false
	}
	if seconds != nil {
		// libfuse takes fractional seconds ("attr_timeout=0.5").
		f, err := strconv.ParseFloat(val, 64)
		if err != nil || !(f >= 0 && f <= math.MaxInt64/float64(time.Second)) { // NaN fails too
			return false
		}
		*seconds = time.Duration(f * float64(time.Second))
		return true
	}
	n, err := strconv.Atoi(val)
	limit := math.MaxUint16 // the kernel's field for max_background and congestion_threshold
	if key == "max_readahead" {
		limit = math.MaxInt32
	}
	if err != nil || n < 0 || n > limit || (n == 0 && key != "congestion_threshold") {
		return false
	}
	*count = n
	return true
}
