package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/infera-dev/infera/internal/adminapi"
	"github.com/infera-dev/infera/internal/manifest"
	"github.com/infera-dev/infera/internal/store"
)

// Apply validates sources against what is applied and stores them all, or nothing. Invalid
// input returns an error wrapping adminapi.ErrInvalid, with the problems in the result.
func (c *Controller) Apply(ctx context.Context, sources []manifest.Source, dryRun bool) (adminapi.ApplyResult, error) {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	docs, stored, err := ApplyDocuments(c.store)
	if err != nil {
		return adminapi.ApplyResult{}, err
	}
	set := manifest.Load(ctx, sources, manifest.Options{Applied: docs})
	res := problems(set.Problems)
	if res.Errors > 0 {
		return res, adminapi.ErrInvalid
	}
	if len(set.Documents) == 0 {
		return res, fmt.Errorf("%w: no objects in the input", adminapi.ErrInvalid)
	}
	puts := make([]store.Object, 0, len(set.Documents))
	for _, doc := range set.Documents {
		o, err := storedObject(doc)
		if err != nil {
			return res, err
		}
		puts = append(puts, o)
	}
	if dryRun {
		for _, o := range puts {
			action := "created (dry run)"
			if stored[o.Key] {
				action = "configured (dry run)"
			}
			res.Changes = append(res.Changes, change(o.Key, action))
		}
		return res, nil
	}
	return c.commit(ctx, res, puts, nil)
}

// Delete removes the objects the sources name (they need not validate, only decode).
func (c *Controller) Delete(ctx context.Context, sources []manifest.Source) (adminapi.ApplyResult, error) {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	set := manifest.Load(ctx, sources, manifest.Options{})
	var res adminapi.ApplyResult
	var keys []store.Key
	for _, p := range set.Problems.Errors() {
		if p.Object == "" { // the document itself could not be read
			res.Problems = append(res.Problems, p.String())
			res.Errors++
		}
	}
	if res.Errors > 0 {
		return res, adminapi.ErrInvalid
	}
	for _, doc := range set.Documents {
		if doc.Kind == "" || doc.Name == "" {
			continue
		}
		k := store.Key{Group: doc.Group, Kind: doc.Kind, Namespace: doc.Namespace, Name: doc.Name}
		if _, err := c.store.Get(k); errors.Is(err, store.ErrNotFound) {
			res.Problems = append(res.Problems, fmt.Sprintf("%s: not found", k))
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return res, nil
	}
	return c.commit(ctx, res, nil, keys)
}

// commit applies puts and deletes in one transaction and reports each change. The watch
// brings them to the reconcile loop.
func (c *Controller) commit(ctx context.Context, res adminapi.ApplyResult, puts []store.Object, deletes []store.Key) (adminapi.ApplyResult, error) {
	changes, _, err := c.store.Apply(ctx, puts, deletes)
	if err != nil {
		return res, err
	}
	for _, ch := range changes {
		res.Changes = append(res.Changes, change(ch.Key, ch.Action.String()))
	}
	return res, nil
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

func change(k store.Key, action string) adminapi.Change {
	return adminapi.Change{Kind: k.Kind, Group: k.Group, Namespace: k.Namespace, Name: k.Name, Action: action}
}

func problems(ps manifest.Problems) adminapi.ApplyResult {
	ps.Sort()
	var r adminapi.ApplyResult
	for _, p := range ps {
		r.Problems = append(r.Problems, p.String())
	}
	r.Errors, r.Warnings = len(ps.Errors()), len(ps.Warnings())
	return r
}
