package controller

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/infera-dev/infera/internal/fluid"
	"github.com/infera-dev/infera/internal/manifest"
	"github.com/infera-dev/infera/internal/modelcache"
	"github.com/infera-dev/infera/internal/reconciler"
	"github.com/infera-dev/infera/internal/workload"
)

// Datasets is what the controller needs of the model cache (internal/modelcache.Manager).
type Datasets interface {
	Set(specs []modelcache.DatasetSpec)
	SetDataLoads(specs []modelcache.DataLoadSpec)
	// Path is the directory serving a Dataset's claim once Ready; an error wrapping
	// modelcache.ErrNotReady while it is being fetched, modelcache.ErrUnavailable when it
	// failed.
	Path(namespace, name string) (string, error)
	// LazyPath is Path, or while the dataset is being fetched (and listed) the directory of
	// its lazy FUSE mount, which replicas read as it streams in.
	LazyPath(namespace, name string) (string, error)
	Pin(namespace, name, holder string)
	Unpin(namespace, name, holder string)
	Statuses() []modelcache.DatasetStatus
	DataLoadStatuses() []modelcache.DataLoadStatus
}

// ReasonDatasetNotReady is a Pending revision's reason while a Dataset it mounts is fetched.
const ReasonDatasetNotReady = "DatasetNotReady"

// AnnotationDatasetMode on a revision (its Service's template annotations) chooses how its
// Datasets are served: DatasetModePrefetch waits until each is cached whole; anything else
// (the default) mounts a Dataset being fetched lazily when the model cache can.
const AnnotationDatasetMode = "infera.dev/dataset-mode"

// How a running revision's replicas got their Datasets (RevisionView.DatasetMode).
const (
	DatasetModeLazy     = "lazy"     // a lazy FUSE mount over a dataset still being fetched
	DatasetModePrefetch = "prefetch" // the cache's directory, once cached whole
	DatasetModeInPlace  = "in-place" // a dataset of local or NAS mounts, where it lies
)

// datasetModes records the mode of the revision being resolved and of each running revision.
// The loop writes it; the admin views read it.
type datasetModes struct {
	mu       sync.Mutex
	resolved string // the revision being resolved
	byRev    map[workload.RevisionID]string
}

// note records that the revision being resolved got a dataset in mode; first is true for its
// first dataset. A lazy dataset makes the revision lazy; prefetch holds for all of them.
func (m *datasetModes) note(mode string, first bool) {
	if first || m.resolved == "" || mode == DatasetModeLazy {
		m.resolved = mode
	}
}

func (m *datasetModes) set(id workload.RevisionID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.byRev == nil {
		m.byRev = map[workload.RevisionID]string{}
	}
	m.byRev[id] = m.resolved
}

func (m *datasetModes) remove(id workload.RevisionID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.byRev, id)
}

// of is a running revision's mode, "" for one with no Datasets.
func (m *datasetModes) of(id workload.RevisionID) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.byRev[id]
}

// Recheck says that something outside the store that revisions may wait for changed (a
// dataset's status): every Pending and Failed revision is resolved again on the next pass. It
// never blocks; the model cache calls it.
func (c *Controller) Recheck() {
	select {
	case c.recheck <- struct{}{}:
	default:
	}
}

// syncDatasets gives the model cache the Datasets (with their runtimes and resolved
// encryptOptions) and DataLoads in the store.
func (c *Controller) syncDatasets() {
	if c.datasets == nil {
		return
	}
	var specs []modelcache.DatasetSpec
	for _, key := range slices.Sorted(maps.Keys(c.state.datasets)) {
		d := c.state.resolvePVCMounts(c.state.datasets[key])
		spec := modelcache.DatasetSpec{Namespace: d.Namespace, Name: d.Name, Dataset: d,
			Runtime: c.state.runtime(d.Namespace, d.Name), Secrets: map[string]string{}}
		for i := range d.Spec.Mounts {
			for _, o := range d.Spec.MountEncryptOptions(&d.Spec.Mounts[i]) {
				ref := o.ValueFrom.SecretKeyRef
				if s := c.state.Secret(d.Namespace, ref.Name); s != nil {
					if v, ok := secretValue(s.Data, s.StringData, ref.Key); ok {
						spec.Secrets[o.Name] = v
					}
				}
			}
		}
		specs = append(specs, spec)
	}
	c.datasets.Set(specs)
	var loads []modelcache.DataLoadSpec
	for _, key := range slices.Sorted(maps.Keys(c.state.dataLoads)) {
		l := c.state.dataLoads[key]
		loads = append(loads, modelcache.DataLoadSpec{Namespace: l.Namespace, Name: l.Name, DataLoad: l})
	}
	c.datasets.SetDataLoads(loads)
}

func secretValue(data map[string][]byte, stringData map[string]string, key string) (string, bool) {
	if v, ok := stringData[key]; ok {
		return v, true
	}
	v, ok := data[key]
	return string(v), ok
}

// datasetPath serves reconciler.Resolve a Dataset's claim through the model cache, recording
// which datasets the revision being resolved uses (they are pinned while it runs) and how it
// got them: lazily unless its annotation asks for prefetch.
func (c *Controller) datasetPath(rev *servingv1.Revision, d *fluid.Dataset) (string, error) {
	first := len(c.resolving) == 0
	c.resolving = append(c.resolving, nsName(d.Namespace, d.Name))
	prefetch := rev != nil && rev.Annotations[AnnotationDatasetMode] == DatasetModePrefetch
	var p string
	var err error
	lazy := false
	if prefetch {
		p, err = c.datasets.Path(d.Namespace, d.Name)
	} else {
		p, err = c.datasets.LazyPath(d.Namespace, d.Name)
		// A Ready dataset's Path does not move: a LazyPath other than it is the lazy mount.
		plain, perr := c.datasets.Path(d.Namespace, d.Name)
		lazy = perr != nil || plain != p
	}
	switch {
	case err == nil:
		c.dsModes.note(c.datasetMode(d, lazy), first)
		return p, nil
	case errors.Is(err, modelcache.ErrNotReady):
		return "", &reconciler.WaitError{Kind: fluid.KindDataset, Namespace: d.Namespace, Name: d.Name,
			Reason:  ReasonDatasetNotReady,
			Message: fmt.Sprintf("dataset %s/%s is not cached yet (infera get datasets shows its progress)", d.Namespace, d.Name)}
	default:
		return "", fmt.Errorf("dataset %s/%s: %w", d.Namespace, d.Name, err)
	}
}

// datasetMode names how a revision gets the dataset d it resolved.
func (c *Controller) datasetMode(d *fluid.Dataset, lazy bool) string {
	if lazy {
		return DatasetModeLazy
	}
	for _, s := range c.datasets.Statuses() {
		if s.Namespace == d.Namespace && s.Name == d.Name && s.InPlace {
			return DatasetModeInPlace
		}
	}
	return DatasetModePrefetch
}

// pin holds the datasets a running revision mounts in the cache (never evicted), and unpin
// lets them go when it retires.
func (c *Controller) pin(id workload.RevisionID, datasets []string) {
	if c.datasets == nil || len(datasets) == 0 {
		return
	}
	c.pins[id] = datasets
	c.dsModes.set(id)
	for _, key := range datasets {
		ns, name := splitKey(key)
		c.datasets.Pin(ns, name, string(id))
	}
}

func (c *Controller) unpin(id workload.RevisionID) {
	for _, key := range c.pins[id] {
		ns, name := splitKey(key)
		c.datasets.Unpin(ns, name, string(id))
	}
	delete(c.pins, id)
	c.dsModes.remove(id)
}

func splitKey(key string) (namespace, name string) {
	for i := range len(key) {
		if key[i] == '/' {
			return key[:i], key[i+1:]
		}
	}
	return "", key
}

// resolvePVCMounts returns d with each `pvc://claim/sub` mount pointing at the claim's
// directory on this machine (its infera.dev/host-path annotation), as Fluid mounts an existing
// PVC as a dataset's source; such a mount is then served in place. A claim that is missing or
// has no directory is left as it is, and the model cache reports the mount as unsupported
// until it is applied.
func (s *state) resolvePVCMounts(d *fluid.Dataset) *fluid.Dataset {
	var out *fluid.Dataset
	for i, m := range d.Spec.Mounts {
		rest, ok := strings.CutPrefix(m.MountPoint, "pvc://")
		if !ok {
			continue
		}
		claim, sub, _ := strings.Cut(rest, "/")
		pvc := s.PersistentVolumeClaim(d.Namespace, claim)
		if pvc == nil || pvc.Annotations[manifest.HostPathAnnotation] == "" {
			continue
		}
		if out == nil {
			cp := *d
			cp.Spec.Mounts = slices.Clone(d.Spec.Mounts)
			out = &cp
		}
		out.Spec.Mounts[i].MountPoint = filepath.Join(pvc.Annotations[manifest.HostPathAnnotation], filepath.Clean("/"+sub))
	}
	if out == nil {
		return d
	}
	return out
}
