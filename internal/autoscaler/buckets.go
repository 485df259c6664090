package autoscaler

import (
	"math"
	"time"
)

// BucketSize is the granularity of every metric window: one bucket per
// second, as Knative's config.BucketSize.
const BucketSize = time.Second

// Algorithm is how a window of buckets is averaged, chosen by the revision's
// autoscaling.knative.dev/metric-aggregation-algorithm annotation.
type Algorithm uint8

const (
	// Linear is the plain mean over the valid part of the window (the default).
	Linear Algorithm = iota
	// WeightedExponential weighs recent seconds more, with a smoothing
	// coefficient derived from the window length.
	WeightedExponential
)

// ParseAlgorithm maps the annotation value to an Algorithm. Like Knative, it
// accepts "weighted-exponential" and its legacy spelling "weightedExponential";
// anything else (including "") is Linear.
func ParseAlgorithm(s string) Algorithm {
	switch s {
	case "weighted-exponential", "weightedExponential":
		return WeightedExponential
	}
	return Linear
}

func (a Algorithm) String() string {
	if a == WeightedExponential {
		return "weighted-exponential"
	}
	return "linear"
}

const (
	// noTime is time.Time{}.Unix(): the "never written" value of a bucket
	// timestamp, so that arithmetic on it behaves as Knative's zero time.Time.
	noTime = -62135596800

	// Weighted averaging: the weights of the window's buckets sum to at least
	// weightPrecision, and the decay is never slower than minSmoothing.
	weightPrecision = 0.9999
	minSmoothing    = 0.2

	// Linear averages are rounded to this many decimal digits.
	roundDigits = 6

	// maxSeconds is the largest whole number of seconds a time.Duration holds.
	maxSeconds = math.MaxInt64 / int64(time.Second)
)

// Buckets is a time series of float64 samples summed into one-second
// buckets, covering a sliding window, and averaged over that window with
// either Algorithm. It reproduces Knative v0.50.0's
// aggregation.TimedFloat64Buckets (Linear) and WeightedFloat64Buckets
// (WeightedExponential) exactly, including their arithmetic order, so that
// both return the same float64 for the same input:
//
//   - Record adds to the bucket of now's second; a gap since the last write is
//     zero-filled, and a gap of a whole window or more starts the series anew.
//     Samples a window or more older than the last write are dropped.
//   - Linear averages over the buckets since the first write when fewer than a
//     window's worth exist, and leaves out the seconds since the last write
//     (the window shrinks rather than counting them as zeros); the result is
//     rounded to 6 digits. A window with no write is 0.
//   - WeightedExponential counts the seconds since the last write as zeros and
//     weighs bucket k seconds old by c·(1−c)^k, c = max(1−(1−0.9999)^(1/n), 0.2)
//     for n buckets.
//
// Unlike Knative's, it takes now in ResizeWindow too (Knative reads the wall
// clock there), holds no lock (the owner serialises calls), allocates its
// buckets on the first write and can give them back with Release.
// The zero value is not usable; call NewBuckets.
type Buckets struct {
	buckets []float64 // ring indexed by Unix second mod n; nil = all zero
	window  time.Duration
	// firstWrite and lastWrite are Unix seconds (noTime when unset).
	firstWrite, lastWrite int64
	// total is the running sum of all buckets, maintained incrementally (the
	// rounding of that running sum is part of what is reproduced).
	total     float64
	smoothing float64 // WeightedExponential only
	n         int32   // number of buckets: ceil(window / 1 s)
	alg       Algorithm
}

// NewBuckets returns an empty series averaged over window with alg.
func NewBuckets(alg Algorithm, window time.Duration) *Buckets {
	b := &Buckets{}
	b.init(alg, window)
	return b
}

func (b *Buckets) init(alg Algorithm, window time.Duration) {
	*b = Buckets{
		window:     window,
		firstWrite: noTime,
		lastWrite:  noTime,
		n:          numBuckets(window),
		alg:        alg,
	}
	if alg == WeightedExponential {
		b.smoothing = smoothingCoefficient(b.n)
	}
}

func numBuckets(window time.Duration) int32 {
	return int32(math.Ceil(float64(window) / float64(BucketSize)))
}

// smoothingCoefficient is the decay that makes n buckets carry at least
// weightPrecision of the total weight, but no less than minSmoothing.
func smoothingCoefficient(n int32) float64 {
	return math.Max(1-math.Pow(1-weightPrecision, 1/float64(n)), minSmoothing)
}

// Window is the length the series averages over.
func (b *Buckets) Window() time.Duration { return b.window }

// Algorithm is how the series is averaged.
func (b *Buckets) Algorithm() Algorithm { return b.alg }

// sub is a−b seconds as a Duration, saturating as time.Time.Sub does.
func sub(a, b int64) time.Duration {
	d := a - b
	switch {
	case (a >= b) != (d >= 0): // overflowed int64 itself
		if a >= b {
			return math.MaxInt64
		}
		return math.MinInt64
	case d > maxSeconds:
		return math.MaxInt64
	case d < -maxSeconds:
		return math.MinInt64
	}
	return time.Duration(d) * time.Second
}

// index maps a Unix second to its bucket.
func (b *Buckets) index(sec int64) int64 { return sec % int64(b.n) }

// Record adds v to the bucket of now's second.
func (b *Buckets) Record(now time.Time, v float64) {
	sec := now.Unix()
	if sec != b.lastWrite {
		if sub(b.lastWrite, sec) >= b.window {
			return // a window or more before the newest data: too old to count
		}
		if b.firstWrite == noTime || b.firstWrite > sec {
			b.firstWrite = sec
		}
		if sec > b.lastWrite {
			if sub(sec, b.lastWrite) >= b.window {
				// Nothing for a whole window: start over.
				b.firstWrite = sec
				clear(b.buckets)
				b.total = 0
			} else if b.buckets != nil {
				// Zero the seconds skipped since the last write, and this one.
				for s := b.lastWrite + 1; s <= sec; s++ {
					i := b.index(s)
					b.total -= b.buckets[i]
					b.buckets[i] = 0
				}
			}
			b.lastWrite = sec
		}
	}
	if b.buckets == nil {
		b.buckets = make([]float64, b.n)
	}
	b.buckets[b.index(sec)] += v
	b.total += v
}

// IsEmpty reports whether nothing was written in the window before now.
func (b *Buckets) IsEmpty(now time.Time) bool {
	return sub(now.Unix(), b.lastWrite) > b.window
}

// WindowAverage is the average of the window ending at now.
func (b *Buckets) WindowAverage(now time.Time) float64 {
	if b.alg == WeightedExponential {
		return b.weightedAverage(now.Unix())
	}
	return b.linearAverage(now.Unix())
}

func (b *Buckets) linearAverage(now int64) float64 {
	// Seconds covered since the first write, both ends inclusive.
	written := float64(sub(b.lastWrite, b.firstWrite)/BucketSize) + 1
	switch d := sub(now, b.lastWrite); {
	case d <= 0:
		return roundTo(roundDigits, b.total/math.Min(written, float64(b.n)))
	case d < b.window:
		// The seconds since the last write hold data older than the window:
		// take them out, and average over what is left.
		sum := b.total
		if b.buckets != nil {
			for s := b.lastWrite + 1; s <= now; s++ {
				sum -= b.buckets[b.index(s)]
			}
		}
		return roundTo(roundDigits, sum/math.Min(written, float64(int64(b.n)-(now-b.lastWrite))))
	default:
		return 0
	}
}

func (b *Buckets) weightedAverage(now int64) float64 {
	if sub(now, b.lastWrite) > b.window || b.buckets == nil {
		return 0
	}
	n := int64(b.n)
	count := n
	weight := b.smoothing
	if now > b.lastWrite {
		// The seconds since the last write are zeros: skip their weights.
		zeros := sub(now, b.lastWrite) / BucketSize
		weight *= math.Pow(1-b.smoothing, float64(zeros))
		count -= int64(zeros)
	}
	avg := 0.
	for k := range count {
		term := b.buckets[(b.lastWrite+n-k)%n] * weight
		avg += term
		weight *= 1 - b.smoothing
	}
	return avg
}

func roundTo(digits int, f float64) float64 {
	p := math.Pow10(digits)
	return math.Round(f*p) / p
}

// ResizeWindow changes the window to w, as Knative's ResizeWindow: when data
// was written within the old window before now, the newest min(old, new)
// buckets are kept and the series is treated as having started a full old
// window before the last write; otherwise the series is emptied.
// WeightedExponential recomputes its smoothing coefficient.
func (b *Buckets) ResizeWindow(now time.Time, w time.Duration) {
	if w == b.window {
		return
	}
	oldN, newN := int64(b.n), int64(numBuckets(w))
	var resized []float64
	total := 0.
	if sub(now.Unix(), b.lastWrite) <= b.window {
		if b.buckets != nil {
			resized = make([]float64, newN)
			for s := b.lastWrite; s > b.lastWrite-min(oldN, newN); s-- {
				v := b.buckets[s%oldN]
				resized[s%newN] = v
				total += v
			}
		}
		b.firstWrite = b.lastWrite - (oldN - 1)
	} else {
		b.firstWrite = noTime
	}
	b.window, b.n = w, int32(newN)
	b.buckets, b.total = resized, total
	if b.alg == WeightedExponential {
		b.smoothing = smoothingCoefficient(b.n)
	}
}

// Release frees the buckets' memory when nothing was written for longer than
// the window before now, so an idle series costs only its header. No average
// changes, provided time does not run backwards past now afterwards.
func (b *Buckets) Release(now time.Time) {
	if b.buckets != nil && b.IsEmpty(now) {
		b.buckets, b.total = nil, 0
	}
}
