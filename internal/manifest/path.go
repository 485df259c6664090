package manifest

import (
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// A field path is written the way Knative writes it: `spec.template.spec.containers[0].image`,
// map keys that hold dots or slashes in brackets: `metadata.annotations[autoscaling.knative.dev/window]`.
// Knative itself sometimes writes such keys with dots (`annotations.autoscaling.knative.dev/window`);
// resolving a path against the YAML document matches the longest key, so both forms find the node.

type segKind int

const (
	segName  segKind = iota // .name (may later join with the next names to match a dotted key)
	segKey                  // [key]
	segIndex                // [0]
)

type segment struct {
	kind  segKind
	name  string
	index int
}

// parsePath splits a field path into segments; brackets may hold dots.
func parsePath(p string) []segment {
	var segs []segment
	for i := 0; i < len(p); {
		switch p[i] {
		case '.':
			i++
		case '[':
			end := strings.IndexByte(p[i:], ']')
			if end < 0 {
				segs = append(segs, segment{kind: segName, name: p[i:]})
				return segs
			}
			inner := p[i+1 : i+end]
			if n, err := strconv.Atoi(inner); err == nil {
				segs = append(segs, segment{kind: segIndex, index: n})
			} else {
				segs = append(segs, segment{kind: segKey, name: inner})
			}
			i += end + 1
		default:
			end := strings.IndexAny(p[i:], ".[")
			if end < 0 {
				end = len(p) - i
			}
			segs = append(segs, segment{kind: segName, name: p[i : i+end]})
			i += end
		}
	}
	return segs
}

// joinKey appends a map key or field name to a rendered path.
func joinKey(path, key string) string {
	if strings.ContainsAny(key, "./[] ") || key == "" {
		return path + "[" + key + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func joinIndex(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// resolvePath finds the node a field path names inside a document root (a mapping node). It
// returns the rendered path and the node to point at: the key node of a mapping entry, the
// element node of a sequence, or the deepest existing ancestor when the path leads to a field
// that is absent (a missing field is reported where its parent is).
func resolvePath(root *yaml.Node, path string) (string, *yaml.Node) {
	segs := parsePath(path)
	node, at := root, root
	rendered := ""
	for i := 0; i < len(segs); {
		node = deref(node)
		s := segs[i]
		switch {
		case s.kind == segIndex && node != nil && node.Kind == yaml.SequenceNode && s.index >= 0 && s.index < len(node.Content):
			node = node.Content[s.index]
			at = node
			rendered = joinIndex(rendered, s.index)
			i++
			continue
		case s.kind != segIndex && node != nil && node.Kind == yaml.MappingNode:
			// Longest run of name segments that spells an existing key.
			matched := false
			for j := len(segs); j > i; j-- {
				if !joinable(segs[i:j]) {
					continue
				}
				key := joinNames(segs[i:j])
				if k, v := lookup(node, key); k != nil {
					rendered = joinKey(rendered, key)
					node, at = v, k
					i = j
					matched = true
					break
				}
			}
			if matched {
				continue
			}
		}
		// The rest of the path does not exist in the document: render it as written.
		for _, s := range segs[i:] {
			switch s.kind {
			case segIndex:
				rendered = joinIndex(rendered, s.index)
			case segKey:
				rendered = joinKey(rendered, s.name)
			default:
				if rendered == "" {
					rendered = s.name
				} else {
					rendered += "." + s.name
				}
			}
		}
		return rendered, at
	}
	return rendered, at
}

// joinable reports whether segments can spell one key: a single segment of any key kind, or a
// run of plain names (a dotted key written without brackets).
func joinable(segs []segment) bool {
	if len(segs) == 1 {
		return segs[0].kind != segIndex
	}
	for _, s := range segs {
		if s.kind != segName {
			return false
		}
	}
	return true
}

func joinNames(segs []segment) string {
	names := make([]string, len(segs))
	for i, s := range segs {
		names[i] = s.name
	}
	return strings.Join(names, ".")
}

// lookup returns the key and value nodes of key in a mapping node.
func lookup(m *yaml.Node, key string) (*yaml.Node, *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if k := m.Content[i]; k.Kind == yaml.ScalarNode && k.Value == key {
			return k, m.Content[i+1]
		}
	}
	return nil, nil
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}
