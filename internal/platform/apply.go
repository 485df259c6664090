package platform

import (
	"context"
	"errors"
	"fmt"

	"github.com/infera-dev/infera/internal/manifest"
	"github.com/infera-dev/infera/internal/store"
)

// ApplyResult is what an apply or delete did, or would do with DryRun.
type ApplyResult struct {
	Changes  []Change `json:"changes,omitempty"`
	Problems []string `json:"problems,omitempty"` // errors and warnings, file:line:col first
	Errors   int      `json:"errors"`
	Warnings int      `json:"warnings"`
}

// Change is one object's outcome, as kubectl prints it: "service.serving.knative.dev/llm created".
type Change struct {
	Kind      string `json:"kind"`
	Group     string `json:"group,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Action    string `json:"action"`
}

func (c Change) String() string {
	k := c.Kind
	if c.Group != "" {
		k += "." + c.Group
	}
	return fmt.Sprintf("%s/%s %s", lower(k), c.Name, c.Action)
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// ErrInvalid is returned (wrapped) when manifests do not validate; nothing was applied.
var ErrInvalid = errors.New("invalid manifests: nothing applied")

// apply validates sources against what is applied and stores them all, or nothing.
func (c *Controller) apply(ctx context.Context, sources []manifest.Source, dryRun bool) (ApplyResult, error) {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	snap, err := readSnapshot(c.store)
	if err != nil {
		return ApplyResult{}, err
	}
	set := manifest.Load(ctx, sources, manifest.Options{Applied: snap.docs})
	res := problems(set.Problems)
	if res.Errors > 0 {
		return res, ErrInvalid
	}
	if len(set.Documents) == 0 {
		return res, fmt.Errorf("%w: no objects in the input", ErrInvalid)
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
			if _, ok := snap.stored[o.Key]; ok {
				action = "configured (dry run)"
			}
			res.Changes = append(res.Changes, change(o.Key, action))
		}
		return res, nil
	}
	return c.commit(ctx, res, puts, nil)
}

// remove deletes the objects the sources name (they need not validate, only decode).
func (c *Controller) remove(ctx context.Context, sources []manifest.Source) (ApplyResult, error) {
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	set := manifest.Load(ctx, sources, manifest.Options{})
	var res ApplyResult
	var keys []store.Key
	for _, p := range set.Problems.Errors() {
		if p.Object == "" { // the document itself could not be read
			res.Problems = append(res.Problems, p.String())
			res.Errors++
		}
	}
	if res.Errors > 0 {
		return res, ErrInvalid
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

// store_ applies puts and deletes in one transaction and reports each change.
func (c *Controller) commit(ctx context.Context, res ApplyResult, puts []store.Object, deletes []store.Key) (ApplyResult, error) {
	changes, _, err := c.store.Apply(ctx, puts, deletes)
	if err != nil {
		return res, err
	}
	for _, ch := range changes {
		res.Changes = append(res.Changes, change(ch.Key, ch.Action.String()))
	}
	c.Kick()
	return res, nil
}

func change(k store.Key, action string) Change {
	return Change{Kind: k.Kind, Group: k.Group, Namespace: k.Namespace, Name: k.Name, Action: action}
}

func problems(ps manifest.Problems) ApplyResult {
	ps.Sort()
	var r ApplyResult
	for _, p := range ps {
		r.Problems = append(r.Problems, p.String())
	}
	r.Errors, r.Warnings = len(ps.Errors()), len(ps.Warnings())
	return r
}
