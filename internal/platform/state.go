package platform

import (
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/infera-dev/infera/internal/fluid"
	"github.com/infera-dev/infera/internal/manifest"
	"github.com/infera-dev/infera/internal/store"
)

// Kinds the reconciler writes to the store itself; they are never applied by users.
const (
	servingGroup      = "serving.knative.dev"
	kindService       = "Service"
	kindConfiguration = "Configuration"
	kindRevision      = "Revision"
)

func ownedByReconciler(k store.Key) bool {
	return k.Group == servingGroup && (k.Kind == kindConfiguration || k.Kind == kindRevision)
}

// snapshot is everything in the store, decoded.
type snapshot struct {
	rev            uint64
	docs           []*manifest.Document // user-applied objects
	services       []*servingv1.Service
	configurations []*servingv1.Configuration
	revisions      []*servingv1.Revision
	stored         map[store.Key]store.Object
	knative        *manifest.KnativeConfig

	secrets    map[string]*corev1.Secret
	configMaps map[string]*corev1.ConfigMap
	pvcs       map[string]*corev1.PersistentVolumeClaim
	datasets   map[string]*fluid.Dataset
}

func nsName(ns, name string) string { return ns + "/" + name }

// Objects for reconciler.Resolve.
func (s *snapshot) Secret(ns, name string) *corev1.Secret { return s.secrets[nsName(ns, name)] }
func (s *snapshot) ConfigMap(ns, name string) *corev1.ConfigMap {
	return s.configMaps[nsName(ns, name)]
}
func (s *snapshot) PersistentVolumeClaim(ns, name string) *corev1.PersistentVolumeClaim {
	return s.pvcs[nsName(ns, name)]
}
func (s *snapshot) Dataset(ns, name string) *fluid.Dataset { return s.datasets[nsName(ns, name)] }

// readSnapshot lists and decodes the whole store.
func readSnapshot(st *store.Store) (*snapshot, error) {
	objs, rev, err := st.ListWithRevision("", "", "")
	if err != nil {
		return nil, err
	}
	s := &snapshot{
		rev: rev, stored: make(map[store.Key]store.Object, len(objs)),
		secrets: map[string]*corev1.Secret{}, configMaps: map[string]*corev1.ConfigMap{},
		pvcs: map[string]*corev1.PersistentVolumeClaim{}, datasets: map[string]*fluid.Dataset{},
	}
	for _, o := range objs {
		s.stored[o.Key] = o
		if ownedByReconciler(o.Key) {
			switch o.Key.Kind {
			case kindConfiguration:
				c := &servingv1.Configuration{}
				if err := json.Unmarshal(o.Data, c); err != nil {
					return nil, fmt.Errorf("state: %s: %w", o.Key, err)
				}
				s.configurations = append(s.configurations, c)
			case kindRevision:
				r := &servingv1.Revision{}
				if err := json.Unmarshal(o.Data, r); err != nil {
					return nil, fmt.Errorf("state: %s: %w", o.Key, err)
				}
				s.revisions = append(s.revisions, r)
			}
			continue
		}
		doc, err := manifest.DecodeStored(o.APIVersion, o.Key.Kind, o.Data, o.Source)
		if err != nil {
			return nil, fmt.Errorf("state: %s: %w", o.Key, err)
		}
		s.docs = append(s.docs, doc)
		switch obj := doc.Object.(type) {
		case *servingv1.Service:
			obj.Generation = o.Generation
			s.services = append(s.services, obj)
		case *corev1.Secret:
			s.secrets[nsName(obj.Namespace, obj.Name)] = obj
		case *corev1.ConfigMap:
			s.configMaps[nsName(obj.Namespace, obj.Name)] = obj
		case *corev1.PersistentVolumeClaim:
			s.pvcs[nsName(obj.Namespace, obj.Name)] = obj
		case *fluid.Dataset:
			s.datasets[nsName(obj.Namespace, obj.Name)] = obj
		}
	}
	return s, nil
}

// storedObject turns an applied document into what the store keeps.
func storedObject(doc *manifest.Document) (store.Object, error) {
	data, err := json.Marshal(doc.Object)
	if err != nil {
		return store.Object{}, fmt.Errorf("%s: %w", doc.ID(), err)
	}
	return store.Object{
		Key:        store.Key{Group: doc.Group, Kind: doc.Kind, Namespace: doc.Namespace, Name: doc.Name},
		APIVersion: doc.APIVersion,
		Data:       data,
		Source:     doc.Pos.String(),
	}, nil
}

func (s *snapshot) knativeConfig() *manifest.KnativeConfig {
	if s.knative == nil {
		s.knative = manifest.KnativeOf(s.docs)
	}
	return s.knative
}
