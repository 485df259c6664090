package controller

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/infera-dev/infera/internal/adminapi"
	"github.com/infera-dev/infera/internal/modelcache"
	"github.com/infera-dev/infera/internal/store"
	"github.com/infera-dev/infera/internal/workload"
)

// fakeDatasets stands in for the model cache: each dataset is not ready until the test says
// where it lies (or that it failed).
type fakeDatasets struct {
	calls *calls
	mu    sync.Mutex
	specs []modelcache.DatasetSpec
	paths map[string]string // namespace/name -> directory once ready
	fails map[string]string
	lazy  map[string]string // namespace/name -> lazy mount while not ready
}

func (f *fakeDatasets) Set(specs []modelcache.DatasetSpec) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.specs = specs
	var names []string
	for _, s := range specs {
		names = append(names, s.Namespace+"/"+s.Name+fmt.Sprintf("(runtime=%v,secrets=%d)", s.Runtime != nil, len(s.Secrets)))
	}
	f.calls.add("datasets.Set %s", strings.Join(names, " "))
}

func (f *fakeDatasets) SetDataLoads(specs []modelcache.DataLoadSpec) {}

func (f *fakeDatasets) Path(ns, name string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if msg, ok := f.fails[ns+"/"+name]; ok {
		return "", fmt.Errorf("%w: %s", modelcache.ErrUnavailable, msg)
	}
	if p, ok := f.paths[ns+"/"+name]; ok {
		return p, nil
	}
	return "", fmt.Errorf("%w: fetching 1 MiB of 4 MiB", modelcache.ErrNotReady)
}

func (f *fakeDatasets) LazyPath(ns, name string) (string, error) {
	p, err := f.Path(ns, name)
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.lazy[ns+"/"+name]; ok && errors.Is(err, modelcache.ErrNotReady) {
		f.calls.add("datasets.LazyPath %s/%s", ns, name)
		return l, nil
	}
	return p, err
}

func (f *fakeDatasets) Pin(ns, name, holder string) {
	f.calls.add("datasets.Pin %s/%s %s", ns, name, holder)
}
func (f *fakeDatasets) Unpin(ns, name, holder string) {
	f.calls.add("datasets.Unpin %s/%s %s", ns, name, holder)
}
func (f *fakeDatasets) Statuses() []modelcache.DatasetStatus {
	return []modelcache.DatasetStatus{{Namespace: "default", Name: "oss-data", Phase: modelcache.PhaseFetching, Done: 1, Total: 4}}
}
func (f *fakeDatasets) DataLoadStatuses() []modelcache.DataLoadStatus { return nil }

const datasetYAML = `apiVersion: v1
kind: Secret
metadata: {name: access-key, namespace: default}
stringData: {fs.oss.accessKeyId: AKID, fs.oss.accessKeySecret: SECRET}
---
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {name: oss-data, namespace: default}
spec:
  mounts:
    - mountPoint: oss://bucket/models
      name: sd
      options: {fs.oss.endpoint: "http://127.0.0.1:9000"}
      encryptOptions:
        - name: fs.oss.accessKeyId
          valueFrom: {secretKeyRef: {name: access-key, key: fs.oss.accessKeyId}}
        - name: fs.oss.accessKeySecret
          valueFrom: {secretKeyRef: {name: access-key, key: fs.oss.accessKeySecret}}
---
apiVersion: data.fluid.io/v1alpha1
kind: JindoRuntime
metadata: {name: oss-data, namespace: default}
spec:
  tieredstore:
    levels: [{mediumtype: SSD, path: /tmp/ssd, quota: 1Gi}]
---
`

const mountsDataset = `          volumeMounts: [{name: model, mountPath: /models}]
      volumes: [{name: model, persistentVolumeClaim: {claimName: oss-data}}]
`

// TestDatasetPendingThenRunning: a revision mounting a Dataset waits (Pending,
// DatasetNotReady) while the model cache fetches it, starts when the cache says it is ready,
// mounting the cache's directory, and pins the dataset while it runs.
func TestDatasetPendingThenRunning(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "")
		ds := &fakeDatasets{calls: h.calls, paths: map[string]string{}, fails: map[string]string{}}
		h.restartWith(ds)
		h.apply(datasetYAML + service("sd", mountsDataset))
		h.expect(
			"datasets.Set default/oss-data(runtime=true,secrets=2)",
			"gateway.SetRoutes sd.default.localhost->default/sd-00001=100",
		)
		r := h.revision("sd-00001")
		if r.State != adminapi.StatePending || r.Reason != ReasonDatasetNotReady || !strings.Contains(r.Message, "default/oss-data") {
			t.Errorf("revision waiting for its dataset: %+v", r)
		}
		if got := h.ctrl.Datasets(); len(got) != 1 || got[0].Phase != "Fetching" || got[0].Mode != "prefetch" {
			t.Errorf("datasets view: %+v", got)
		}

		ds.mu.Lock()
		ds.paths["default/oss-data"] = "/cache/default/oss-data"
		ds.mu.Unlock()
		h.ctrl.Recheck()
		synctest.Wait()
		id := workload.RevisionID("default/sd-00001")
		h.expect(
			"gateway.SetRevision default/sd-00001",
			"scaler.Upsert default/sd-00001",
			"gateway.SetActivatorInPath default/sd-00001 false",
			"supervisor.Scale default/sd-00001 1",
			"datasets.Pin default/oss-data default/sd-00001",
		)
		vols := h.gw.revs[id].Volumes
		if i := slices.IndexFunc(vols, func(v workload.Volume) bool { return v.Name == "model" }); i < 0 ||
			vols[i].HostPath != "/cache/default/oss-data" || vols[i].MountPath != "/models" || vols[i].Kind != workload.VolumeHostPath {
			t.Errorf("volumes: %+v", vols)
		}

		h.delete(service("sd", ""))
		if calls := strings.Join(h.calls.take(), "\n"); !strings.Contains(calls, "datasets.Unpin default/oss-data default/sd-00001") {
			t.Errorf("retiring the revision must unpin its dataset; calls:\n%s", calls)
		}
	})
}

// TestDatasetFailed: a dataset the cache cannot get fails the revisions that mount it, with
// the cache's message; they start once it recovers.
func TestDatasetFailed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "")
		ds := &fakeDatasets{calls: h.calls, paths: map[string]string{}, fails: map[string]string{"default/oss-data": "s3://bucket/models: access denied (403)"}}
		h.restartWith(ds)
		h.apply(datasetYAML + service("sd", mountsDataset))
		r := h.revision("sd-00001")
		if r.State != adminapi.StateFailed || r.Reason != "DatasetFailed" || !strings.Contains(r.Message, "access denied (403)") {
			t.Errorf("revision of a failed dataset: %+v", r)
		}
		if strings.Contains(r.Message, "SECRET") || strings.Contains(r.Message, "AKID") {
			t.Errorf("a credential in the message: %s", r.Message)
		}
		ds.mu.Lock()
		delete(ds.fails, "default/oss-data")
		ds.paths["default/oss-data"] = "/cache/x"
		ds.mu.Unlock()
		h.ctrl.Recheck()
		synctest.Wait()
		if r := h.revision("sd-00001"); r.State != adminapi.StateRunning {
			t.Errorf("after the dataset recovered: %+v", r)
		}
	})
}

// TestDatasetLazyAndPrefetch: a revision mounts a dataset being fetched through its lazy mount
// at once (mode lazy); one annotated infera.dev/dataset-mode: prefetch waits until it is
// cached whole (mode prefetch), and starts by itself then.
func TestDatasetLazyAndPrefetch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "")
		ds := &fakeDatasets{calls: h.calls, paths: map[string]string{}, fails: map[string]string{},
			lazy: map[string]string{"default/oss-data": "/cache/.lazy/default/oss-data"}}
		h.restartWith(ds)
		prefetched := `apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: pre, namespace: default}
spec:
  template:
    metadata:
      annotations: {infera.dev/dataset-mode: prefetch}
    spec:
      containers:
        - image: example.com/app
          command: ["app"]
` + mountsDataset
		h.apply(datasetYAML + service("sd", mountsDataset) + "---\n" + prefetched)
		lazy := h.revision("sd-00001")
		if lazy.State != adminapi.StateRunning || lazy.DatasetMode != DatasetModeLazy {
			t.Errorf("revision of a dataset being fetched: %+v, want Running, lazy", lazy)
		}
		if vols := h.gw.revs["default/sd-00001"].Volumes; !slices.ContainsFunc(vols, func(v workload.Volume) bool {
			return v.Name == "model" && v.HostPath == "/cache/.lazy/default/oss-data"
		}) {
			t.Errorf("volumes: %+v, want the lazy mount", vols)
		}
		pre := h.revision("pre-00001")
		if pre.State != adminapi.StatePending || pre.Reason != ReasonDatasetNotReady {
			t.Errorf("prefetch revision while fetching: %+v, want Pending", pre)
		}

		ds.mu.Lock()
		ds.paths["default/oss-data"] = "/cache/default/oss-data"
		ds.mu.Unlock()
		h.ctrl.Recheck()
		synctest.Wait()
		if pre := h.revision("pre-00001"); pre.State != adminapi.StateRunning || pre.DatasetMode != DatasetModePrefetch {
			t.Errorf("prefetch revision once cached: %+v, want Running, prefetch", pre)
		}
		if lazy := h.revision("sd-00001"); lazy.DatasetMode != DatasetModeLazy {
			t.Errorf("the lazy revision keeps its mode: %+v", lazy)
		}
	})
}

// TestPVCMountResolved: a pvc:// mount reaches the model cache as the claim's directory on
// this machine, sub-path kept; a claim without one is left for the cache to refuse.
func TestPVCMountResolved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "")
		ds := &fakeDatasets{calls: h.calls, paths: map[string]string{}, fails: map[string]string{}}
		h.restartWith(ds)
		h.apply(`apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: nas, namespace: default, annotations: {infera.dev/host-path: /srv/nas}}
spec: {accessModes: [ReadOnlyMany], resources: {requests: {storage: 1Gi}}}
---
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {name: from-pvc, namespace: default}
spec:
  mounts:
    - {mountPoint: "pvc://nas/models/llm", name: llm}
`)
		ds.mu.Lock()
		defer ds.mu.Unlock()
		if len(ds.specs) != 1 || ds.specs[0].Dataset.Spec.Mounts[0].MountPoint != "/srv/nas/models/llm" {
			t.Fatalf("specs: %+v", ds.specs)
		}
		if o, err := h.store.Get(store.Key{Group: "data.fluid.io", Kind: "Dataset", Namespace: "default", Name: "from-pvc"}); err != nil ||
			!strings.Contains(string(o.Data), "pvc://nas/models/llm") {
			t.Errorf("the stored Dataset was changed: %v %s", err, o.Data)
		}
	})
}
