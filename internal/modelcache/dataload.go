package modelcache

import (
	"cmp"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/infera-dev/infera/internal/fluid"
)

// DataLoads, as Fluid runs them and as infera maps them onto one machine:
//
//   - A run loads the dataset's target paths (every file when target is empty) into the cache
//     and is Complete once they are all cached, even while the rest of the dataset is still
//     being fetched: the Manager fetches the targets first. Since a replica needs its whole
//     dataset, the rest is still fetched; target[].replicas means nothing on one machine.
//   - loadMetadata lists the dataset's sources again before loading (Fluid syncs the cache's
//     metadata with the under storage): objects whose size or ETag changed are fetched again,
//     new ones fetched, removed ones deleted. Without it a run loads from what the cache knows.
//     If that listing fails the run fails and the cached copy stays served.
//   - Once runs when the DataLoad is given (and again when its spec changes, or after a
//     restart, where cached files make it quick). Cron runs at each time of its schedule, a
//     standard five-field cron expression (CRON_TZ= allowed) read on the Manager's clock; a run
//     due while the previous one still executes is skipped (a CronJob's Forbid). OnEvent runs
//     when given, then each time the dataset's source changes: every WatchInterval the dataset
//     is listed again, and a listing that finds an object added, removed, or changed in size or
//     ETag starts a run that loads the changes.
//   - runAfter naming another DataLoad waits until that one is Complete; other kinds of data
//     operation are not run by infera and are not waited for.
//   - The status follows Fluid's OperationStatus (api/v1alpha1/status.go): phase Pending,
//     Executing, Complete or Failed (pkg/common/types.go), and duration, a Go duration string
//     rounded to the second as Fluid's utils.CalculateDuration writes it, measured to now while
//     a run executes; lastScheduleTime and lastSuccessfulTime for Cron.
//   - ttlSecondsAfterFinished, options and the scheduling fields are for Fluid's loader pods
//     and are ignored.

// DataLoadSpec is one DataLoad the cache should run.
type DataLoadSpec struct {
	Namespace string
	Name      string
	DataLoad  *fluid.DataLoad
}

// DataLoadPhase is Fluid's phase of a data operation.
type DataLoadPhase string

// DataLoad phases, as Fluid names them.
const (
	DataLoadPending   DataLoadPhase = "Pending"   // waiting for its dataset, its runAfter, or its schedule
	DataLoadExecuting DataLoadPhase = "Executing" // its targets are being loaded
	DataLoadComplete  DataLoadPhase = "Complete"  // its last run loaded every target
	DataLoadFailed    DataLoadPhase = "Failed"    // its last run failed; Message says why
)

// DataLoadStatus is what the cache says about one DataLoad.
type DataLoadStatus struct {
	Namespace string
	Name      string
	Dataset   string // "namespace/name"
	Policy    fluid.Policy
	Phase     DataLoadPhase
	Message   string
	// Duration is how long the last run took, or has taken so far ("1m5s"); "" before the
	// first run.
	Duration           string
	Runs               int
	StartTime          time.Time
	CompletionTime     time.Time
	LastScheduleTime   time.Time // Cron: the last time a run was due
	LastSuccessfulTime time.Time
	NextScheduleTime   time.Time // Cron: when the next run is due
}

type loadState struct {
	key, ns, name string
	spec          fluid.DataLoadSpec
	fp            string
	dataset       string   // "namespace/name"
	targets       []string // dataset paths, slash-separated, no leading slash; "" is everything
	sched         cron.Schedule

	phase        DataLoadPhase
	message      string
	runs         int
	running      bool
	due          bool // a run should start as soon as it can
	seq          int  // the dataset refresh the run waits for; 0: none
	attempts0    int  // the dataset's failed attempts when the run started
	start, end   time.Time
	lastSchedule time.Time
	lastSuccess  time.Time
	next         time.Time
}

// SetDataLoads gives the DataLoads the cache should run; a new or changed one starts over,
// and one no longer given stops (what it loaded stays cached).
func (m *Manager) SetDataLoads(specs []DataLoadSpec) {
	now := m.clk.Now()
	m.mu.Lock()
	seen := map[string]bool{}
	for _, s := range specs {
		if s.DataLoad == nil {
			continue
		}
		key := s.Namespace + "/" + s.Name
		seen[key] = true
		fp := digest(struct {
			NS   string
			Spec fluid.DataLoadSpec
		}{s.Namespace, s.DataLoad.Spec})
		if l := m.loads[key]; l != nil && l.fp == fp {
			continue
		}
		m.loads[key] = newLoad(s, fp, now)
	}
	for key := range m.loads {
		if !seen[key] {
			delete(m.loads, key)
		}
	}
	m.prioritiesLocked()
	m.mu.Unlock()
	m.wake()
}

func newLoad(s DataLoadSpec, fp string, now time.Time) *loadState {
	spec := s.DataLoad.Spec
	if spec.Policy == "" {
		spec.Policy = fluid.PolicyOnce
	}
	l := &loadState{
		key: s.Namespace + "/" + s.Name, ns: s.Namespace, name: s.Name, spec: spec, fp: fp,
		dataset: cmp.Or(spec.Dataset.Namespace, s.Namespace) + "/" + spec.Dataset.Name,
		phase:   DataLoadPending,
	}
	for _, t := range spec.Target {
		l.targets = append(l.targets, strings.Trim(path.Clean("/"+t.Path), "/"))
	}
	switch spec.Policy {
	case fluid.PolicyCron:
		sched, err := cron.ParseStandard(spec.Schedule)
		if err != nil {
			l.phase, l.message = DataLoadFailed, fmt.Sprintf("invalid cron schedule %q: %v", spec.Schedule, err)
			return l
		}
		l.sched, l.next = sched, sched.Next(now)
		l.message = "waiting for its schedule"
	default:
		l.due = true
	}
	return l
}

// DataLoadStatuses returns the status of every DataLoad given to SetDataLoads, by namespace
// and name.
func (m *Manager) DataLoadStatuses() []DataLoadStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.clk.Now()
	out := make([]DataLoadStatus, 0, len(m.loads))
	for _, key := range slices.Sorted(maps.Keys(m.loads)) {
		l := m.loads[key]
		st := DataLoadStatus{
			Namespace: l.ns, Name: l.name, Dataset: l.dataset, Policy: l.spec.Policy,
			Phase: l.phase, Message: l.message, Runs: l.runs,
			StartTime: l.start, CompletionTime: l.end,
			LastScheduleTime: l.lastSchedule, LastSuccessfulTime: l.lastSuccess, NextScheduleTime: l.next,
		}
		switch {
		case l.running:
			st.Duration = now.Sub(l.start).Round(time.Second).String()
		case !l.end.IsZero():
			st.Duration = l.end.Sub(l.start).Round(time.Second).String()
		}
		out = append(out, st)
	}
	return out
}

// scheduleLoadsLocked starts the DataLoad runs that are due and returns when the next is.
func (m *Manager) scheduleLoadsLocked(now time.Time) time.Time {
	var next time.Time
	onEvent := false
	for _, key := range slices.Sorted(maps.Keys(m.loads)) {
		l := m.loads[key]
		if l.sched != nil && !l.next.IsZero() {
			if !now.Before(l.next) {
				l.lastSchedule = l.next
				l.next = l.sched.Next(now)
				if l.running {
					l.message = fmt.Sprintf("skipped the run due at %s: the previous run is still executing", l.lastSchedule.Format(time.RFC3339))
				} else {
					l.due = true
				}
			}
			next = earliest(next, l.next)
		}
		if l.spec.Policy == fluid.PolicyOnEvent {
			onEvent = true
		}
		if l.due {
			m.startLoadLocked(l, now)
		}
	}
	if !onEvent {
		m.nextWatch = time.Time{}
		return next
	}
	if m.nextWatch.IsZero() {
		m.nextWatch = now.Add(m.cfg.WatchInterval)
	}
	if !now.Before(m.nextWatch) {
		m.nextWatch = now.Add(m.cfg.WatchInterval)
		watched := map[string]bool{}
		for _, l := range m.loads {
			if l.spec.Policy == fluid.PolicyOnEvent && !l.running {
				watched[l.dataset] = true
			}
		}
		for key := range watched {
			if d := m.datasets[key]; d != nil && d.phase == PhaseReady && d.inPlace == "" && !d.running {
				m.refreshLocked(d)
			}
		}
	}
	return earliest(next, m.nextWatch)
}

// startLoadLocked starts a run of l when its dataset and its runAfter allow.
func (m *Manager) startLoadLocked(l *loadState, now time.Time) {
	d := m.datasets[l.dataset]
	if d == nil {
		l.phase, l.message = DataLoadPending, fmt.Sprintf("waiting for dataset %s", l.dataset)
		return
	}
	if ra := l.spec.RunAfter; ra != nil && ra.Kind == fluid.KindDataLoad {
		other := cmp.Or(ra.Namespace, l.ns) + "/" + ra.Name
		if o := m.loads[other]; o == nil || o.phase != DataLoadComplete {
			l.phase, l.message = DataLoadPending, fmt.Sprintf("waiting for DataLoad %s to complete", other)
			return
		}
	}
	l.due, l.running = false, true
	l.runs++
	l.phase, l.message = DataLoadExecuting, ""
	l.start, l.end = now, time.Time{}
	l.attempts0 = d.attempts
	l.seq = 0
	if l.spec.LoadMetadata && d.inPlace == "" {
		l.seq = m.refreshLocked(d)
	}
	m.demandLocked(d)
	m.prioritiesLocked()
}

// refreshLocked asks for the dataset's sources to be listed again and returns the request's
// number.
func (m *Manager) refreshLocked(d *dsState) int {
	d.refreshReq++
	d.refresh, d.want, d.evicted = true, true, false
	m.wake()
	return d.refreshReq
}

// sourceChangedLocked starts a run of each idle OnEvent DataLoad of the dataset: a listing
// found its source changed, and what changed is being fetched.
func (m *Manager) sourceChangedLocked(dataset string, now time.Time) {
	for _, l := range m.loads {
		if l.dataset != dataset || l.spec.Policy != fluid.PolicyOnEvent || l.running {
			continue
		}
		l.running, l.due = true, false
		l.runs++
		l.phase, l.message = DataLoadExecuting, "the source changed"
		l.start, l.end, l.seq = now, time.Time{}, 0
		if d := m.datasets[dataset]; d != nil {
			l.attempts0 = d.attempts
		}
	}
	m.prioritiesLocked()
}

// failLoadsLocked fails the runs waiting on a refresh of the dataset.
func (m *Manager) failLoadsLocked(dataset, msg string) {
	now := m.clk.Now()
	for _, l := range m.loads {
		if l.running && l.dataset == dataset && l.seq > 0 {
			m.endLoadLocked(l, DataLoadFailed, msg, now)
		}
	}
}

// evalLoadsLocked ends the runs whose dataset has loaded their targets, or failed.
func (m *Manager) evalLoadsLocked(now time.Time) {
	for _, l := range m.loads {
		if !l.running {
			continue
		}
		d := m.datasets[l.dataset]
		switch {
		case d == nil:
			m.endLoadLocked(l, DataLoadFailed, fmt.Sprintf("dataset %s was deleted", l.dataset), now)
			continue
		case d.phase == PhaseFailed && (d.blocked || d.attempts > l.attempts0):
			m.endLoadLocked(l, DataLoadFailed, d.message, now)
			continue
		case l.seq > d.refreshDone:
			continue
		case d.inPlace != "":
			if d.phase == PhaseReady {
				m.endLoadLocked(l, DataLoadComplete, "served in place: nothing to load", now)
			}
			continue
		}
		e := m.index[d.key]
		if e == nil || e.DataKey != d.dataKey {
			continue // not placed yet
		}
		if len(l.targets) == 0 {
			if e.Complete {
				m.endLoadLocked(l, DataLoadComplete, fmt.Sprintf("%d files (%s) cached", len(e.Files), formatBytes(d.total)), now)
			}
			continue
		}
		matched := make([]int, len(l.targets))
		var files, done int
		var bytes int64
		for _, f := range e.Files {
			hit := false
			for i, t := range l.targets {
				if underAny(f.Path, []string{t}) {
					matched[i]++
					hit = true
				}
			}
			if hit {
				files++
				bytes += f.Object.Size
				if f.Done {
					done++
				}
			}
		}
		switch i := slices.Index(matched, 0); {
		case i >= 0:
			m.endLoadLocked(l, DataLoadFailed, fmt.Sprintf("target /%s: no such path in dataset %s", l.targets[i], l.dataset), now)
		case done == files:
			m.endLoadLocked(l, DataLoadComplete, fmt.Sprintf("%d files (%s) cached", files, formatBytes(bytes)), now)
		}
	}
}

func (m *Manager) endLoadLocked(l *loadState, p DataLoadPhase, msg string, now time.Time) {
	l.running = false
	l.phase, l.message, l.end = p, msg, now
	if p == DataLoadComplete {
		l.lastSuccess = now
		// A DataLoad waiting on this one may start now.
		for _, o := range m.loads {
			if o.due && o.spec.RunAfter != nil {
				m.wake()
				break
			}
		}
	}
	m.prioritiesLocked()
}

// prioritiesLocked gives each dataset the target paths of its executing DataLoads, fetched
// first.
func (m *Manager) prioritiesLocked() {
	want := map[string][]string{}
	for _, l := range m.loads {
		if l.running {
			want[l.dataset] = append(want[l.dataset], l.targets...)
		}
	}
	for key, d := range m.datasets {
		p := want[key]
		slices.Sort(p)
		p = slices.Compact(p)
		if slices.Contains(p, "") {
			p = nil // the whole dataset: no order to change
		}
		d.priority = p
	}
}
