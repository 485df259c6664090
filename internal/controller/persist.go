package controller

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"

	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/infera-dev/infera/internal/store"
)

// diff is what must be written for one computed service: its Configuration and Revisions that
// differ from the stored ones, and the stored ones it no longer has.
func (c *Controller) diff(key string, cs *computed) (puts []store.Object, deletes []store.Key, err error) {
	keep := make([]store.Key, 0, len(cs.revisions)+1)
	add := func(kind, ns, name string, obj any) error {
		k := store.Key{Group: servingGroup, Kind: kind, Namespace: ns, Name: name}
		keep = append(keep, k)
		data, err := json.Marshal(obj)
		if err != nil {
			return err
		}
		if old, ok := c.state.objs[k]; ok && bytes.Equal(old.obj.Data, data) {
			return nil
		}
		puts = append(puts, store.Object{Key: k, APIVersion: servingv1.SchemeGroupVersion.String(), Data: data, Source: "reconciler"})
		return nil
	}
	if err := add(kindConfiguration, cs.config.Namespace, cs.config.Name, cs.config); err != nil {
		return nil, nil, err
	}
	for _, r := range cs.revisions {
		if err := add(kindRevision, r.Namespace, r.Name, r); err != nil {
			return nil, nil, err
		}
	}
	for _, k := range c.state.ownedKeys(key) {
		if !slices.Contains(keep, k) {
			deletes = append(deletes, k)
		}
	}
	return puts, deletes, nil
}

// persist writes puts and deletes in one Apply and folds them into the state at once, so the
// next pass computes from what was written even before the watch delivers it (the watch's
// copy of the same revision is then skipped).
func (c *Controller) persist(ctx context.Context, puts []store.Object, deletes []store.Key) error {
	if len(puts) == 0 && len(deletes) == 0 {
		return nil
	}
	slices.SortFunc(deletes, func(a, b store.Key) int { return compareKeys(a, b) })
	deletes = slices.Compact(deletes)
	for _, p := range puts {
		c.log.Debug("persist", "key", p.Key.String(), "data", string(p.Data))
	}
	_, rev, err := c.store.Apply(ctx, puts, deletes)
	if err != nil {
		return err
	}
	var ignored changes // the pass that wrote them already accounts for them
	for _, p := range puts {
		p.Revision = rev
		if err := c.state.put(p, &ignored); err != nil {
			return err
		}
	}
	for _, k := range deletes {
		c.state.remove(k, &ignored)
	}
	if rev > c.state.rev {
		c.state.rev = rev
	}
	return nil
}

func compareKeys(a, b store.Key) int {
	switch sa, sb := a.String(), b.String(); {
	case sa < sb:
		return -1
	case sa > sb:
		return 1
	}
	return 0
}
