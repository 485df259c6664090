package manifest

import (
	"context"
	"encoding/json"
	"fmt"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/apis"
)

// DefaultNamespace is where objects without metadata.namespace go, as with kubectl.
const DefaultNamespace = "default"

// Options tune Load.
type Options struct {
	// Applied are the objects already in effect (from the store). Cross-references may point at
	// them, and their Knative ConfigMaps apply unless the input replaces them.
	Applied []*Document
}

// Set is the result of loading manifests: the typed documents and every problem found.
// The set may be applied only when Problems.Err() is nil.
type Set struct {
	Documents []*Document
	Problems  Problems
	Knative   *KnativeConfig
}

// aliasBudget bounds how many nodes a document may expand to through aliases, relative to the
// nodes it is written with: ordinary anchors stay far below it, an alias bomb hits it at once.
func aliasBudget(root *yaml.Node) int {
	return 16*countNodes(root) + 10_000
}

func countNodes(n *yaml.Node) int {
	c := 1
	for _, child := range n.Content {
		c += countNodes(child)
	}
	return c
}

// Load decodes, defaults and validates a set of sources as a whole: every document is checked
// strictly against its type, Knative's ConfigMaps in the set configure the validation of its
// Services, and references between objects (and to Options.Applied) are resolved. All problems
// are reported at once, each with its file, line, column and field path.
func Load(ctx context.Context, sources []Source, opts Options) *Set {
	set := &Set{}
	for _, src := range sources {
		raws, probs := splitDocuments(src)
		set.Problems = append(set.Problems, probs...)
		for _, raw := range raws {
			if doc, probs := decodeDocument(raw); doc != nil {
				set.Documents = append(set.Documents, doc)
				set.Problems = append(set.Problems, probs...)
			} else {
				set.Problems = append(set.Problems, probs...)
			}
		}
	}
	set.checkDuplicates()

	kc, cmErrs := knativeConfig(knativeConfigMaps(opts.Applied, set.Documents))
	set.Knative = kc
	vctx := kc.WithKnative(ctx)
	for _, doc := range set.Documents {
		if doc.Object == nil {
			continue
		}
		info, _ := findKind(doc.APIVersion, doc.Kind)
		fe := info.validate(vctx, doc.Object)
		if cm, ok := doc.Object.(*corev1.ConfigMap); ok && cm.Namespace == KnativeNamespace {
			fe = fe.Also(cmErrs[cm.Name])
		}
		set.Problems = append(set.Problems, doc.fieldProblems(fe)...)
	}
	set.Problems = append(set.Problems, crossReferences(set.Documents, opts.Applied)...)
	set.Problems.Sort()
	return set
}

// knativeConfigMaps picks Knative's ConfigMaps out of the applied objects and the input; the
// input's replace the applied ones of the same name.
func knativeConfigMaps(applied, input []*Document) map[string]*corev1.ConfigMap {
	out := map[string]*corev1.ConfigMap{}
	for _, docs := range [][]*Document{applied, input} {
		for _, d := range docs {
			if cm, ok := d.Object.(*corev1.ConfigMap); ok && cm.Namespace == KnativeNamespace {
				out[cm.Name] = cm
			}
		}
	}
	return out
}

// decodeDocument types one raw document. It returns nil when the document cannot be identified
// (no apiVersion or kind, an unknown kind); Object is nil when its fields did not decode.
func decodeDocument(raw rawDoc) (*Document, Problems) {
	at := func(n *yaml.Node) Position {
		if n == nil {
			return raw.pos
		}
		return Position{File: raw.pos.File, Line: n.Line, Col: n.Column}
	}
	apiVersion, avNode := scalar(raw.root, "apiVersion")
	kind, kindNode := scalar(raw.root, "kind")
	name, _ := scalar(raw.root, "metadata", "name")
	namespace, _ := scalar(raw.root, "metadata", "namespace")
	if namespace == "" {
		namespace = DefaultNamespace
	}
	doc := &Document{Pos: raw.pos, APIVersion: apiVersion, Kind: kind, Name: name, Namespace: namespace, root: raw.root}
	switch {
	case apiVersion == "" && kind == "":
		return nil, Problems{{Pos: raw.pos, Message: "document has no apiVersion and no kind"}}
	case apiVersion == "":
		return nil, Problems{{Pos: at(kindNode), Object: doc.ID(), Path: "apiVersion", Message: "missing field"}}
	case kind == "":
		return nil, Problems{{Pos: at(avNode), Path: "kind", Message: "missing field"}}
	}
	info, msg := findKind(apiVersion, kind)
	if msg != "" {
		return nil, Problems{{Pos: at(kindNode), Object: doc.ID(), Path: "kind", Message: msg}}
	}
	doc.Group = info.group
	if info.clusterScoped {
		doc.Namespace = ""
	}

	d := &strictDecoder{file: raw.pos.File, object: doc.ID(), budget: aliasBudget(raw.root), secret: kind == "Secret"}
	obj := info.new()
	value, ok := d.decode(raw.root, derefType(obj), "")
	if !ok {
		return doc, d.probs
	}
	data, err := json.Marshal(value)
	if err == nil {
		err = json.Unmarshal(data, obj)
	}
	if err != nil {
		return doc, append(d.probs, Problem{Pos: raw.pos, Object: doc.ID(), Message: fmt.Sprintf("cannot decode: %v", err)})
	}
	if m, ok := obj.(metav1.Object); ok && m.GetNamespace() == "" && !info.clusterScoped {
		m.SetNamespace(DefaultNamespace)
	}
	doc.Object = obj
	return doc, d.probs
}

// fieldProblems turns a Knative-style FieldError tree into positioned problems. An error with
// several paths (Knative groups identical messages) is reported once, at its first path.
func (d *Document) fieldProblems(fe *apis.FieldError) Problems {
	if fe == nil {
		return nil
	}
	var out Problems
	for _, e := range fe.WrappedErrors() {
		sev := Error
		if e.Level == apis.WarningLevel {
			sev = Warning
		}
		msg := e.Message
		if e.Details != "" {
			msg += ": " + e.Details
		}
		paths := e.Paths
		if len(paths) == 0 {
			paths = []string{""}
		}
		pos, rendered := d.position(paths[0])
		for _, p := range paths[1:] {
			_, r := d.position(p)
			rendered += ", " + r
		}
		out = append(out, Problem{Pos: pos, Object: d.ID(), Path: rendered, Message: msg, Severity: sev})
	}
	return out
}

func (s *Set) checkDuplicates() {
	seen := map[string]*Document{}
	for _, d := range s.Documents {
		if first, dup := seen[d.key()]; dup {
			s.Problems = append(s.Problems, Problem{
				Pos: d.namePos(), Object: d.ID(), Path: "metadata.name",
				Message: fmt.Sprintf("duplicate object: %s is already defined at %s", d.ID(), first.Pos),
			})
			d.Object = nil // validated once, at its first definition
			continue
		}
		seen[d.key()] = d
	}
}
