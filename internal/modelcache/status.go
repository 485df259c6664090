package modelcache

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/infera-dev/infera/internal/fluid"
)

// Errors of the Manager, matched with errors.Is.
var (
	// ErrNotReady: the dataset is not cached yet (pending, fetching, evicted, or retrying after a
	// failure); the message says how far it is. A revision waits.
	ErrNotReady = errors.New("dataset not ready")
	// ErrUnavailable: the dataset failed and will not be served until something changes; the
	// message is the failure.
	ErrUnavailable = errors.New("dataset unavailable")
	// ErrTooLarge: no level of the dataset's store can hold it under its quota. It is not
	// retried until the dataset's spec (or its runtime's) changes. Path's error wraps it with
	// ErrUnavailable.
	ErrTooLarge = errors.New("dataset larger than every cache level")
)

// Phase is where a dataset is in the cache.
//
// The names follow Fluid's Dataset phases where one fits (api/v1alpha1/dataset_types.go):
// Pending and Failed are Fluid's own. Fluid has no phase for a cache being filled, since its
// datasets are Bound as soon as a runtime serves them and read through the cache; infera serves a
// dataset only once every file is local, so Fetching stands between Pending and Ready, and
// Ready is Fluid's Bound with the whole dataset cached.
//
//	Pending ──placed──▶ Fetching ──all files──▶ Ready
//	   ▲  ▲                │                     │
//	   │  └──retry (back-off)── Failed ◀──error──┘ (a DataLoad's refresh)
//	   └──────────────evicted (fetched again when a replica asks)───┘
type Phase string

// Dataset phases.
const (
	PhasePending  Phase = "Pending"  // not placed yet: waiting for room, or evicted
	PhaseFetching Phase = "Fetching" // files being fetched into its level
	PhaseReady    Phase = "Ready"    // every file cached (or served in place): mount Path
	PhaseFailed   Phase = "Failed"   // the last attempt failed; see Message and NextRetry
)

// DatasetStatus is what the cache says about one dataset.
type DatasetStatus struct {
	Namespace string
	Name      string
	Phase     Phase
	// Message says why a dataset is not Ready: its progress, what it waits for, or the
	// failure (the source's error, never a credential).
	Message string
	// Total and Done are bytes: the dataset's size and how much of it is cached.
	Total int64
	Done  int64
	// Files and FilesDone count the dataset's files.
	Files     int
	FilesDone int
	// Rate is bytes per second over the last few seconds; ETA is the time left at that rate
	// (0 when unknown).
	Rate float64
	ETA  time.Duration
	// Level is the medium the dataset is cached on and LevelPath that level's directory; both
	// are empty for a dataset served in place.
	Level     fluid.MediumType
	LevelPath string
	// Path is the directory to mount read-only once Ready.
	Path string
	// InPlace is true for a dataset of local or NAS mounts served where it lies, never copied.
	InPlace bool
	// LazyMount is the directory of the dataset's live lazy mount (LazyPath), or "" when it
	// has none.
	LazyMount string
	// CachedBytes is what the dataset's files take on disk.
	CachedBytes int64
	// LastUsed is when a replica last mounted or released it, or its fetch completed.
	LastUsed time.Time
	// Holders counts the replicas that have it mounted (Pin).
	Holders int
	// Attempts counts the failed attempts since the last success or spec change; NextRetry is
	// when the next begins (zero when none is due: Ready, or a failure not retried).
	Attempts  int
	NextRetry time.Time
}

// String is a one-line summary, as `infera status` might print it.
func (s DatasetStatus) String() string {
	if s.Message == "" {
		return fmt.Sprintf("%s/%s %s", s.Namespace, s.Name, s.Phase)
	}
	return fmt.Sprintf("%s/%s %s: %s", s.Namespace, s.Name, s.Phase, s.Message)
}

// Status returns the status of a dataset given to Set, and false when Set did not give it.
func (m *Manager) Status(namespace, name string) (DatasetStatus, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.datasets[namespace+"/"+name]
	if d == nil {
		return DatasetStatus{}, false
	}
	return m.statusLocked(d, m.clk.Now()), true
}

// Statuses returns the status of every dataset given to Set, by namespace and name.
func (m *Manager) Statuses() []DatasetStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clk.Now()
	out := make([]DatasetStatus, 0, len(m.datasets))
	for _, d := range m.datasets {
		out = append(out, m.statusLocked(d, now))
	}
	slices.SortFunc(out, func(a, b DatasetStatus) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out
}

// Path returns the directory to mount read-only for a Ready dataset. Otherwise it returns an
// error wrapping ErrNotReady with the progress ("fetching 1.2 GiB of 3.4 GiB, 210 MB/s, ETA
// 10s") or ErrUnavailable with the failure. Asking for an evicted dataset fetches it again.
// Pin the dataset before starting a replica on the path, so that it cannot be evicted between.
func (m *Manager) Path(namespace, name string) (string, error) {
	key := namespace + "/" + name
	m.mu.Lock()
	d := m.datasets[key]
	if d == nil {
		m.mu.Unlock()
		return "", datasetErr(key, "not known to the model cache yet", ErrNotReady)
	}
	m.demandLocked(d)
	st := m.statusLocked(d, m.clk.Now())
	m.mu.Unlock()
	switch {
	case st.Phase == PhaseReady:
		return st.Path, nil
	case st.Phase == PhaseFailed && errors.Is(d.reason, ErrTooLarge):
		return "", datasetErr(key, st.Message, ErrUnavailable, ErrTooLarge)
	case st.Phase == PhaseFailed:
		return "", datasetErr(key, st.Message, ErrUnavailable)
	}
	return "", datasetErr(key, st.Message, ErrNotReady)
}

// datasetError is Path's error: the status message, naming the dataset once, matching its
// sentinels.
type datasetError struct {
	msg  string
	errs []error
}

func (e *datasetError) Error() string   { return e.msg }
func (e *datasetError) Unwrap() []error { return e.errs }

func datasetErr(key, msg string, errs ...error) error {
	if !strings.HasPrefix(msg, "dataset "+key+" ") {
		msg = "dataset " + key + ": " + msg
	}
	return &datasetError{msg: msg, errs: errs}
}

func (m *Manager) statusLocked(d *dsState, now time.Time) DatasetStatus {
	st := DatasetStatus{
		Namespace: d.ns,
		Name:      d.name,
		Phase:     d.phase,
		Message:   d.message,
		Total:     d.total,
		Done:      d.done,
		Files:     d.files,
		FilesDone: d.filesDone,
		Holders:   len(m.pins[d.key]),
		Attempts:  d.attempts,
		NextRetry: d.retryAt,
	}
	if d.lazyFS != nil {
		st.LazyMount = d.lazyFS.dir
	}
	if d.inPlace != "" {
		st.Path, st.InPlace = d.inPlace, true
	} else if e := m.index[d.key]; e != nil && !e.Orphan {
		st.Level, st.LevelPath, st.CachedBytes, st.LastUsed = e.Medium, e.LevelDir, e.Bytes, e.LastUsed
		if d.phase == PhaseReady {
			st.Path = e.Dir
		}
	}
	if d.phase == PhaseFailed && !d.retryAt.IsZero() {
		st.Message = fmt.Sprintf("%s (attempt %d failed; retrying in %s)", d.message, d.attempts, max(d.retryAt.Sub(now), 0).Round(time.Second))
	}
	if d.phase == PhaseFetching {
		st.Rate = d.meter.rate(now)
		if st.Rate > 0 && st.Total > st.Done {
			st.ETA = time.Duration(float64(st.Total-st.Done) / st.Rate * float64(time.Second)).Round(time.Second)
		}
		st.Message = progressMessage(st)
	}
	return st
}

// progressMessage is a fetching dataset's message: "fetching 1.2 GiB of 3.4 GiB, 210 MB/s,
// ETA 10s", with what it last failed on when it is retrying.
func progressMessage(st DatasetStatus) string {
	var b strings.Builder
	fmt.Fprintf(&b, "fetching %s of %s", formatBytes(st.Done), formatBytes(st.Total))
	if st.Rate > 0 {
		fmt.Fprintf(&b, ", %s", formatRate(st.Rate))
		if st.ETA > 0 {
			fmt.Fprintf(&b, ", ETA %s", st.ETA)
		}
	}
	return b.String()
}

// formatBytes writes n in binary units with one decimal: "512 B", "1.2 GiB", "1 GiB".
func formatBytes(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return trimZero(strconv.FormatFloat(math.Round(v*10)/10, 'f', 1, 64)) + " " + units[i:i+1] + "iB"
}

// formatRate writes a rate in decimal units, as download tools do: "210 MB/s", "1.5 GB/s".
func formatRate(bps float64) string {
	units := []string{"B/s", "kB/s", "MB/s", "GB/s", "TB/s"}
	i := 0
	for bps >= 1000 && i < len(units)-1 {
		bps /= 1000
		i++
	}
	if bps >= 100 || i == 0 {
		return strconv.FormatFloat(math.Round(bps), 'f', 0, 64) + " " + units[i]
	}
	return trimZero(strconv.FormatFloat(math.Round(bps*10)/10, 'f', 1, 64)) + " " + units[i]
}

func trimZero(s string) string { return strings.TrimSuffix(s, ".0") }

// rateMeter measures a transfer rate over the last rateWindow from samples of a byte count.
type rateMeter struct {
	samples []rateSample
}

type rateSample struct {
	at time.Time
	n  int64
}

const rateWindow = 5 * time.Second

// add records that the count stood at n at now.
func (r *rateMeter) add(now time.Time, n int64) {
	// Samples kept are at least rateWindow/50 apart: the newest moves until then.
	if k := len(r.samples); k >= 2 && now.Sub(r.samples[k-2].at) < rateWindow/50 {
		r.samples[k-1] = rateSample{now, n}
	} else {
		r.samples = append(r.samples, rateSample{now, n})
	}
	// Keep one sample at or before the window's start, as the base of the rate.
	cut := 0
	for cut+1 < len(r.samples) && !r.samples[cut+1].at.After(now.Add(-rateWindow)) {
		cut++
	}
	r.samples = r.samples[cut:]
}

// reset forgets every sample; the next add starts a new measure from n.
func (r *rateMeter) reset() { r.samples = r.samples[:0] }

// rate is bytes per second between the newest sample at or before the window's start (or the
// oldest sample) and now, taking the count to have stood still since the last sample.
func (r *rateMeter) rate(now time.Time) float64 {
	if len(r.samples) == 0 {
		return 0
	}
	base := r.samples[0]
	for _, s := range r.samples[1:] {
		if s.at.After(now.Add(-rateWindow)) {
			break
		}
		base = s
	}
	last := r.samples[len(r.samples)-1]
	el := now.Sub(base.at)
	if el <= 0 || last.n <= base.n {
		return 0
	}
	return float64(last.n-base.n) / el.Seconds()
}
