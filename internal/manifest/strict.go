package manifest

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

// strictDecoder walks a YAML node tree against a Go type the way the API server's strict
// decoding would, but with positions: every unknown field, wrong type and duplicate key becomes
// a Problem at its line and column. What it returns is the same tree as plain JSON values, which
// encoding/json then decodes into the typed object (so custom unmarshalers such as
// resource.Quantity apply unchanged).
type strictDecoder struct {
	file    string
	object  string
	budget  int // nodes left to visit: aliases can make a small document expand without bound
	over    bool
	probs   Problems
	lenient bool // inside a map[string]string: scalars that are not strings are accepted with a warning
	secret  bool // the object is a Secret: messages never quote its values
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

func (d *strictDecoder) problem(n *yaml.Node, sev Severity, path, format string, args ...any) {
	d.probs = append(d.probs, Problem{
		Pos:      Position{File: d.file, Line: n.Line, Col: n.Column},
		Object:   d.object,
		Path:     path,
		Message:  fmt.Sprintf(format, args...),
		Severity: sev,
	})
}

// decode returns the JSON value of n checked against t; ok is false when n cannot be used.
func (d *strictDecoder) decode(n *yaml.Node, t reflect.Type, path string) (any, bool) {
	if d.over {
		return nil, false
	}
	if d.budget--; d.budget < 0 {
		d.over = true
		d.problem(n, Error, path, "document expands to too many nodes through aliases (refusing a possible YAML alias bomb)")
		return nil, false
	}
	n = deref(n)
	if isNull(n) {
		return nil, true
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		return d.custom(n, t, path)
	}
	switch t.Kind() {
	case reflect.Struct:
		return d.structValue(n, t, path)
	case reflect.Map:
		return d.mapValue(n, t, path)
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return d.bytesValue(n, path)
		}
		return d.sliceValue(n, t, path)
	case reflect.Interface:
		return d.generic(n, path)
	case reflect.String:
		return d.stringValue(n, path)
	case reflect.Bool:
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
			return n.Value == "true" || n.Value == "True" || n.Value == "TRUE", true
		}
		d.problem(n, Error, path, "expected true or false, got %s", d.describe(n))
		return nil, false
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return d.intValue(n, t, path)
	case reflect.Float32, reflect.Float64:
		if n.Kind == yaml.ScalarNode && (n.ShortTag() == "!!int" || n.ShortTag() == "!!float") {
			f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
			if err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
				return json.Number(strconv.FormatFloat(f, 'g', -1, 64)), true
			}
		}
		d.problem(n, Error, path, "expected a number, got %s", d.describe(n))
		return nil, false
	}
	d.problem(n, Error, path, "cannot decode %s into %s", d.describe(n), t)
	return nil, false
}

func (d *strictDecoder) custom(n *yaml.Node, t reflect.Type, path string) (any, bool) {
	v, ok := d.generic(n, path)
	if !ok {
		return nil, false
	}
	raw, err := json.Marshal(v)
	if err != nil {
		d.problem(n, Error, path, "invalid value: %v", err)
		return nil, false
	}
	if err := reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(raw); err != nil {
		d.problem(n, Error, path, "invalid value %s: %s", d.describe(n), cleanJSONError(err))
		return nil, false
	}
	return v, true
}

func (d *strictDecoder) structValue(n *yaml.Node, t reflect.Type, path string) (any, bool) {
	if n.Kind != yaml.MappingNode {
		d.problem(n, Error, path, "expected an object, got %s", d.describe(n))
		return nil, false
	}
	fields := fieldsOf(t)
	out := make(map[string]any, len(n.Content)/2)
	ok := true
	d.entries(n, path, func(k, v *yaml.Node, key string) {
		f, found := fields.byName[key]
		if !found {
			msg := fmt.Sprintf("unknown field %q", key)
			if s := nearest(key, fields.names); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			}
			d.problem(k, Error, joinKey(path, key), "%s", msg)
			ok = false
			return
		}
		val, vok := d.decode(v, f, joinKey(path, key))
		ok = ok && vok
		out[key] = val
	})
	return out, ok
}

func (d *strictDecoder) mapValue(n *yaml.Node, t reflect.Type, path string) (any, bool) {
	if n.Kind != yaml.MappingNode {
		d.problem(n, Error, path, "expected a map, got %s", d.describe(n))
		return nil, false
	}
	if t.Key().Kind() != reflect.String {
		d.problem(n, Error, path, "cannot decode into %s", t)
		return nil, false
	}
	lenient := d.lenient
	d.lenient = t.Elem().Kind() == reflect.String
	defer func() { d.lenient = lenient }()
	out := make(map[string]any, len(n.Content)/2)
	ok := true
	d.entries(n, path, func(_, v *yaml.Node, key string) {
		val, vok := d.decode(v, t.Elem(), joinKey(path, key))
		ok = ok && vok
		out[key] = val
	})
	return out, ok
}

// entries calls fn for each key of a mapping, reporting non-string and duplicate keys. Merge
// keys (<<) are expanded as YAML specifies: keys written in the mapping override merged ones,
// and earlier merge sources override later ones.
func (d *strictDecoder) entries(n *yaml.Node, path string, fn func(k, v *yaml.Node, key string)) {
	seen := make(map[string]int, len(n.Content)/2)
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merges = append(merges, mergeSources(deref(v))...)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.problem(k, Error, path, "map keys must be strings, got %s", d.describe(k))
			continue
		}
		if line, dup := seen[k.Value]; dup {
			d.problem(k, Error, joinKey(path, k.Value), "duplicate key (first defined at line %d)", line)
			continue
		}
		seen[k.Value] = k.Line
		fn(k, v, k.Value)
	}
	for _, m := range merges {
		if d.over {
			return
		}
		d.entries(m, path, func(k, v *yaml.Node, key string) {
			if _, overridden := seen[key]; !overridden {
				seen[key] = k.Line
				fn(k, v, key)
			}
		})
	}
}

func mergeSources(v *yaml.Node) []*yaml.Node {
	switch v.Kind {
	case yaml.MappingNode:
		return []*yaml.Node{v}
	case yaml.SequenceNode:
		var out []*yaml.Node
		for _, e := range v.Content {
			if e = deref(e); e.Kind == yaml.MappingNode {
				out = append(out, e)
			}
		}
		return out
	}
	return nil
}

func (d *strictDecoder) sliceValue(n *yaml.Node, t reflect.Type, path string) (any, bool) {
	if n.Kind != yaml.SequenceNode {
		d.problem(n, Error, path, "expected a list, got %s", d.describe(n))
		return nil, false
	}
	lenient := d.lenient
	d.lenient = false
	defer func() { d.lenient = lenient }()
	out := make([]any, len(n.Content))
	ok := true
	for i, e := range n.Content {
		v, eok := d.decode(e, t.Elem(), joinIndex(path, i))
		ok = ok && eok
		out[i] = v
	}
	return out, ok
}

func (d *strictDecoder) bytesValue(n *yaml.Node, path string) (any, bool) {
	if n.Kind != yaml.ScalarNode {
		d.problem(n, Error, path, "expected base64 data, got %s", d.describe(n))
		return nil, false
	}
	if _, err := base64.StdEncoding.DecodeString(n.Value); err != nil {
		d.problem(n, Error, path, "value is not valid base64 (use stringData for plain text): %v", err)
		return nil, false
	}
	return n.Value, true
}

func (d *strictDecoder) stringValue(n *yaml.Node, path string) (any, bool) {
	if n.Kind != yaml.ScalarNode {
		d.problem(n, Error, path, "expected a string, got %s", d.describe(n))
		return nil, false
	}
	if tag := n.ShortTag(); tag != "!!str" && tag != "!!binary" && tag != "!!timestamp" {
		if d.lenient {
			d.problem(n, Warning, path, "%s is not a string: accepted as a string; kubectl rejects it, so quote it", d.describe(n))
			return n.Value, true
		}
		d.problem(n, Error, path, "expected a string, got %s (quote it)", d.describe(n))
		return nil, false
	}
	return n.Value, true
}

func (d *strictDecoder) intValue(n *yaml.Node, t reflect.Type, path string) (any, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		d.problem(n, Error, path, "expected an integer, got %s", d.describe(n))
		return nil, false
	}
	v := reflect.New(t).Elem()
	s := strings.ReplaceAll(n.Value, "_", "")
	if t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64 {
		u, err := strconv.ParseUint(s, 0, t.Bits())
		if err != nil {
			d.problem(n, Error, path, "integer %s out of range for %s", d.describe(n), t.Kind())
			return nil, false
		}
		v.SetUint(u)
	} else {
		i, err := strconv.ParseInt(s, 0, t.Bits())
		if err != nil {
			d.problem(n, Error, path, "integer %s out of range for %s", d.describe(n), t.Kind())
			return nil, false
		}
		v.SetInt(i)
	}
	return json.Number(fmt.Sprint(v.Interface())), true
}

// generic converts any node to plain JSON values (for interface{} fields and custom types).
func (d *strictDecoder) generic(n *yaml.Node, path string) (any, bool) {
	if d.over {
		return nil, false
	}
	if d.budget--; d.budget < 0 {
		d.over = true
		d.problem(n, Error, path, "document expands to too many nodes through aliases (refusing a possible YAML alias bomb)")
		return nil, false
	}
	n = deref(n)
	switch n.Kind {
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		ok := true
		d.entries(n, path, func(_, v *yaml.Node, key string) {
			val, vok := d.generic(v, joinKey(path, key))
			ok = ok && vok
			out[key] = val
		})
		return out, ok
	case yaml.SequenceNode:
		out := make([]any, len(n.Content))
		ok := true
		for i, e := range n.Content {
			v, eok := d.generic(e, joinIndex(path, i))
			ok = ok && eok
			out[i] = v
		}
		return out, ok
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return nil, true
		case "!!bool":
			return strings.EqualFold(n.Value, "true"), true
		case "!!int", "!!float":
			f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
			if err != nil {
				if i, ierr := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64); ierr == nil {
					return json.Number(strconv.FormatInt(i, 10)), true
				}
				d.problem(n, Error, path, "invalid number: %s", d.describe(n))
				return nil, false
			}
			if math.IsInf(f, 0) || math.IsNaN(f) {
				d.problem(n, Error, path, "%s cannot be represented in JSON", d.describe(n))
				return nil, false
			}
			if n.ShortTag() == "!!int" {
				return json.Number(strings.ReplaceAll(n.Value, "_", "")), true
			}
			return json.Number(strconv.FormatFloat(f, 'g', -1, 64)), true
		}
		return n.Value, true
	}
	d.problem(n, Error, path, "unsupported YAML node")
	return nil, false
}

// describe names a node for a message; a Secret's values are never quoted.
func (d *strictDecoder) describe(n *yaml.Node) string {
	if d.secret && n.Kind == yaml.ScalarNode {
		return "a " + tagName(n.ShortTag()) + " value"
	}
	return describe(n)
}

func isNull(n *yaml.Node) bool {
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "an object"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		v := n.Value
		if len(v) > 40 {
			v = v[:37] + "..."
		}
		return fmt.Sprintf("%s %q", tagName(n.ShortTag()), v)
	}
	return "a YAML node"
}

func tagName(tag string) string {
	switch tag {
	case "!!str":
		return "string"
	case "!!int":
		return "integer"
	case "!!float":
		return "float"
	case "!!bool":
		return "boolean"
	case "!!null":
		return "null"
	}
	return strings.TrimPrefix(tag, "!!")
}

func cleanJSONError(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "json: ")
	return s
}

// fieldSet is the JSON view of a struct type: field names (with inlined embedded structs) to types.
type fieldSet struct {
	byName map[string]reflect.Type
	names  []string
}

var fieldCache sync.Map // reflect.Type -> *fieldSet

func fieldsOf(t reflect.Type) *fieldSet {
	if fs, ok := fieldCache.Load(t); ok {
		return fs.(*fieldSet)
	}
	fs := &fieldSet{byName: map[string]reflect.Type{}}
	collectFields(t, fs)
	sort.Strings(fs.names)
	fieldCache.Store(t, fs)
	return fs
}

func collectFields(t reflect.Type, fs *fieldSet) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		ft := f.Type
		if f.Anonymous && name == "" {
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				collectFields(ft, fs)
				continue
			}
		}
		if strings.Contains(opts, "inline") && ft.Kind() == reflect.Struct {
			collectFields(ft, fs)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if _, dup := fs.byName[name]; !dup {
			fs.names = append(fs.names, name)
		}
		fs.byName[name] = ft
	}
}

// nearest returns the candidate closest to s (case-insensitive edit distance), or "" when none
// is close enough to be a likely typo.
func nearest(s string, candidates []string) string {
	best, bestD := "", len(s)/2+2
	ls := strings.ToLower(s)
	for _, c := range candidates {
		if d := editDistance(ls, strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func derefType(obj any) reflect.Type {
	t := reflect.TypeOf(obj)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}
