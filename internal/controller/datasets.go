package controller

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/infera-dev/infera/internal/fluid"
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
	Pin(namespace, name, holder string)
	Unpin(namespace, name, holder string)
	Statuses() []modelcache.DatasetStatus
	DataLoadStatuses() []modelcache.DataLoadStatus
}

// ReasonDatasetNotReady is a Pending revision's reason while a Dataset it mounts is fetched.
const ReasonDatasetNotReady = "DatasetNotReady"

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
		d := c.state.datasets[key]
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
// which datasets the revision being resolved uses (they are pinned while it runs).
func (c *Controller) datasetPath(d *fluid.Dataset) (string, error) {
	c.resolving = append(c.resolving, nsName(d.Namespace, d.Name))
	p, err := c.datasets.Path(d.Namespace, d.Name)
	switch {
	case err == nil:
		return p, nil
	case errors.Is(err, modelcache.ErrNotReady):
		return "", &reconciler.WaitError{Kind: fluid.KindDataset, Namespace: d.Namespace, Name: d.Name,
			Reason:  ReasonDatasetNotReady,
			Message: fmt.Sprintf("dataset %s/%s is not cached yet (infera get datasets shows its progress)", d.Namespace, d.Name)}
	default:
		return "", fmt.Errorf("dataset %s/%s: %w", d.Namespace, d.Name, err)
	}
}

// pin holds the datasets a running revision mounts in the cache (never evicted), and unpin
// lets them go when it retires.
func (c *Controller) pin(id workload.RevisionID, datasets []string) {
	if c.datasets == nil || len(datasets) == 0 {
		return
	}
	c.pins[id] = datasets
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
}

func splitKey(key string) (namespace, name string) {
	for i := range len(key) {
		if key[i] == '/' {
			return key[:i], key[i+1:]
		}
	}
	return "", key
}
