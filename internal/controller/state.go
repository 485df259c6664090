package controller

import (
	"encoding/json"
	"fmt"
	"github.com/infera-dev/infera/internal/ack"
	"sort"

	corev1 "k8s.io/api/core/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/infera-dev/infera/internal/fluid"
	"github.com/infera-dev/infera/internal/manifest"
	"github.com/infera-dev/infera/internal/modelcache"
	"github.com/infera-dev/infera/internal/store"
)

// Kinds the reconciler writes to the store itself; they are never applied by users.
const (
	servingGroup      = "serving.knative.dev"
	kindService       = "Service"
	kindConfiguration = "Configuration"
	kindRevision      = "Revision"

	labelService = "serving.knative.dev/service"
)

func ownedByReconciler(k store.Key) bool {
	return k.Group == servingGroup && (k.Kind == kindConfiguration || k.Kind == kindRevision)
}

func nsName(ns, name string) string { return ns + "/" + name }

// entry is one stored object, decoded once per store revision of it.
type entry struct {
	obj      store.Object
	doc      *manifest.Document       // user-applied objects
	config   *servingv1.Configuration // reconciler-owned
	revision *servingv1.Revision      // reconciler-owned
	service  string                   // namespace/name of the Service it belongs to, if any
}

// state is the store's contents, decoded, kept current from the watch: a change decodes only
// the objects it touched. It is owned by the reconcile goroutine. It also serves
// reconciler.Resolve as its Objects.
type state struct {
	rev  uint64
	objs map[store.Key]*entry

	services  map[string]*servingv1.Service // namespace/name
	configs   map[string]*servingv1.Configuration
	revisions map[string]map[string]*servingv1.Revision // service -> revision name -> revision

	secrets     map[string]*corev1.Secret
	configMaps  map[string]*corev1.ConfigMap
	pvcs        map[string]*corev1.PersistentVolumeClaim
	datasets    map[string]*fluid.Dataset
	runtimes    map[string]*modelcache.RuntimeSpec // the cache runtime bound to a Dataset: same namespace and name
	dataLoads   map[string]*fluid.DataLoad
	imageCaches map[string]*ack.ImageCache // by name (cluster-scoped)
	policies    map[string]*ack.ResourcePolicy

	knative *manifest.KnativeConfig // nil: recompute from the ConfigMaps on next use
}

func newState() *state {
	return &state{
		objs:     map[store.Key]*entry{},
		services: map[string]*servingv1.Service{}, configs: map[string]*servingv1.Configuration{},
		revisions: map[string]map[string]*servingv1.Revision{},
		secrets:   map[string]*corev1.Secret{}, configMaps: map[string]*corev1.ConfigMap{},
		pvcs: map[string]*corev1.PersistentVolumeClaim{}, datasets: map[string]*fluid.Dataset{},
		runtimes: map[string]*modelcache.RuntimeSpec{}, dataLoads: map[string]*fluid.DataLoad{},
		imageCaches: map[string]*ack.ImageCache{},
		policies:    map[string]*ack.ResourcePolicy{},
	}
}

// changes is what a batch of store changes touched.
type changes struct {
	services map[string]bool // namespace/name of Services whose objects changed
	knative  bool            // a ConfigMap in knative-serving changed (domain, autoscaler, ...)
	datasets bool            // a Dataset, cache runtime, DataLoad or Secret changed
	images   bool            // an ImageCache or a Secret changed
	policies bool            // a ResourcePolicy or the pools ConfigMap changed
	any      bool
	external bool // something outside the store changed (Recheck): resolve every blocked revision
}

func (c *changes) service(key string) {
	if c.services == nil {
		c.services = map[string]bool{}
	}
	c.services[key] = true
}

// load replaces the state with everything in the store.
func (s *state) load(st *store.Store) (changes, error) {
	objs, rev, err := st.ListWithRevision("", "", "")
	if err != nil {
		return changes{}, err
	}
	var ch changes
	seen := make(map[store.Key]bool, len(objs))
	for _, o := range objs {
		seen[o.Key] = true
		if err := s.put(o, &ch); err != nil {
			return changes{}, err
		}
	}
	for k := range s.objs {
		if !seen[k] {
			s.remove(k, &ch)
		}
	}
	s.rev = rev
	return ch, nil
}

// event applies one watch event.
func (s *state) event(ev store.Event, ch *changes) error {
	if ev.Revision > s.rev {
		s.rev = ev.Revision
	}
	if ev.Type == store.EventDeleted {
		s.remove(ev.Object.Key, ch)
		return nil
	}
	return s.put(ev.Object, ch)
}

// put decodes and indexes o unless the state already holds that revision of it.
func (s *state) put(o store.Object, ch *changes) error {
	if old, ok := s.objs[o.Key]; ok && old.obj.Revision >= o.Revision {
		return nil
	}
	e := &entry{obj: o}
	switch {
	case ownedByReconciler(o.Key) && o.Key.Kind == kindConfiguration:
		c := &servingv1.Configuration{}
		if err := json.Unmarshal(o.Data, c); err != nil {
			return fmt.Errorf("state: %s: %w", o.Key, err)
		}
		e.config, e.service = c, nsName(c.Namespace, c.Name)
	case ownedByReconciler(o.Key):
		r := &servingv1.Revision{}
		if err := json.Unmarshal(o.Data, r); err != nil {
			return fmt.Errorf("state: %s: %w", o.Key, err)
		}
		e.revision, e.service = r, nsName(r.Namespace, r.Labels[labelService])
	default:
		doc, err := manifest.DecodeStored(o.APIVersion, o.Key.Kind, o.Data, o.Source)
		if err != nil {
			return fmt.Errorf("state: %s: %w", o.Key, err)
		}
		e.doc = doc
		if svc, ok := doc.Object.(*servingv1.Service); ok {
			svc.Generation = o.Generation
			e.service = nsName(svc.Namespace, svc.Name)
		}
	}
	s.remove(o.Key, ch)
	s.objs[o.Key] = e
	s.index(e, true, ch)
	return nil
}

func (s *state) remove(k store.Key, ch *changes) {
	if e, ok := s.objs[k]; ok {
		delete(s.objs, k)
		s.index(e, false, ch)
	}
}

// index adds e to (or drops it from) the lookups and records what it touched.
func (s *state) index(e *entry, add bool, ch *changes) {
	ch.any = true
	if e.service != "" {
		ch.service(e.service)
	}
	key := nsName(e.obj.Key.Namespace, e.obj.Key.Name)
	switch {
	case e.config != nil:
		set(s.configs, key, e.config, add)
	case e.revision != nil:
		revs := s.revisions[e.service]
		if revs == nil && add {
			revs = map[string]*servingv1.Revision{}
			s.revisions[e.service] = revs
		}
		set(revs, e.revision.Name, e.revision, add)
		if len(revs) == 0 {
			delete(s.revisions, e.service)
		}
	case e.doc != nil:
		switch obj := e.doc.Object.(type) {
		case *servingv1.Service:
			set(s.services, key, obj, add)
		case *corev1.Secret:
			set(s.secrets, key, obj, add)
			ch.datasets = true // encryptOptions may read it
			ch.images = true   // an ImageCache's imagePullSecrets may name it
		case *corev1.ConfigMap:
			set(s.configMaps, key, obj, add)
			if obj.Namespace == manifest.KnativeNamespace {
				s.knative, ch.knative = nil, true
			}
			if obj.Namespace == PoolsNamespace && obj.Name == PoolsConfigMap {
				ch.policies = true
			}
		case *corev1.PersistentVolumeClaim:
			set(s.pvcs, key, obj, add)
		case *fluid.Dataset:
			set(s.datasets, key, obj, add)
			ch.datasets = true
		case *ack.ResourcePolicy:
			set(s.policies, key, obj, add)
			ch.policies = true
		case *ack.ImageCache:
			set(s.imageCaches, obj.Name, obj, add)
			ch.images = true
		case *fluid.DataLoad:
			set(s.dataLoads, key, obj, add)
			ch.datasets = true
		case *fluid.JindoRuntime:
			set(s.runtimes, key, &modelcache.RuntimeSpec{Kind: fluid.KindJindoRuntime, Name: obj.Name, TieredStore: obj.Spec.TieredStore, CleanPolicy: obj.Spec.Fuse.CleanPolicy, FuseArgs: obj.Spec.Fuse.Args}, add)
			ch.datasets = true
		case *fluid.AlluxioRuntime:
			set(s.runtimes, key, &modelcache.RuntimeSpec{Kind: fluid.KindAlluxioRuntime, Name: obj.Name, TieredStore: obj.Spec.TieredStore, CleanPolicy: obj.Spec.Fuse.CleanPolicy, FuseArgs: obj.Spec.Fuse.Args}, add)
			ch.datasets = true
		case *fluid.JuiceFSRuntime:
			set(s.runtimes, key, &modelcache.RuntimeSpec{Kind: fluid.KindJuiceFSRuntime, Name: obj.Name, TieredStore: obj.Spec.TieredStore, CleanPolicy: obj.Spec.Fuse.CleanPolicy}, add)
			ch.datasets = true
		}
	}
}

func set[V any](m map[string]V, k string, v V, add bool) {
	if add {
		m[k] = v
	} else {
		delete(m, k)
	}
}

// Objects for reconciler.Resolve.
func (s *state) Secret(ns, name string) *corev1.Secret { return s.secrets[nsName(ns, name)] }
func (s *state) ConfigMap(ns, name string) *corev1.ConfigMap {
	return s.configMaps[nsName(ns, name)]
}
func (s *state) PersistentVolumeClaim(ns, name string) *corev1.PersistentVolumeClaim {
	return s.pvcs[nsName(ns, name)]
}
func (s *state) Dataset(ns, name string) *fluid.Dataset { return s.datasets[nsName(ns, name)] }

// runtime is the cache runtime bound to a Dataset (Fluid binds by namespace and name), or nil.
func (s *state) runtime(ns, name string) *modelcache.RuntimeSpec { return s.runtimes[nsName(ns, name)] }

// knativeConfig is the Knative ConfigMaps in effect (knative-serving namespace).
func (s *state) knativeConfig() *manifest.KnativeConfig {
	if s.knative == nil {
		var docs []*manifest.Document
		for _, e := range s.objs {
			if e.doc != nil && e.obj.Key.Kind == "ConfigMap" && e.obj.Key.Namespace == manifest.KnativeNamespace {
				docs = append(docs, e.doc)
			}
		}
		sort.Slice(docs, func(i, j int) bool { return docs[i].Name < docs[j].Name })
		s.knative = manifest.KnativeOf(docs)
	}
	return s.knative
}

// serviceRevisions are a service's stored revisions, in no particular order.
func (s *state) serviceRevisions(svc string) []*servingv1.Revision {
	revs := s.revisions[svc]
	out := make([]*servingv1.Revision, 0, len(revs))
	for _, r := range revs {
		out = append(out, r)
	}
	return out
}

// ownedKeys are the stored Configuration and Revisions of a service.
func (s *state) ownedKeys(svc string) []store.Key {
	var keys []store.Key
	if c, ok := s.configs[svc]; ok {
		keys = append(keys, store.Key{Group: servingGroup, Kind: kindConfiguration, Namespace: c.Namespace, Name: c.Name})
	}
	for _, r := range s.revisions[svc] {
		keys = append(keys, store.Key{Group: servingGroup, Kind: kindRevision, Namespace: r.Namespace, Name: r.Name})
	}
	return keys
}

// ApplyDocuments lists and decodes the user-applied objects of a store: what a new apply is
// validated against, and what `infera up` reads before the controller runs.
func ApplyDocuments(st *store.Store) ([]*manifest.Document, map[store.Key]bool, error) {
	objs, err := st.List("", "", "")
	if err != nil {
		return nil, nil, err
	}
	var docs []*manifest.Document
	keys := make(map[store.Key]bool, len(objs))
	for _, o := range objs {
		if ownedByReconciler(o.Key) {
			continue
		}
		doc, err := manifest.DecodeStored(o.APIVersion, o.Key.Kind, o.Data, o.Source)
		if err != nil {
			return nil, nil, fmt.Errorf("state: %s: %w", o.Key, err)
		}
		if svc, ok := doc.Object.(*servingv1.Service); ok {
			svc.Generation = o.Generation
		}
		docs = append(docs, doc)
		keys[o.Key] = true
	}
	return docs, keys, nil
}
