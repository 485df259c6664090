package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Document is one decoded, defaulted and validated object of an input set.
type Document struct {
	Pos        Position // where the document starts
	APIVersion string
	Group      string
	Kind       string
	Namespace  string
	Name       string
	// Object is the typed object (*servingv1.Service, *corev1.Secret, *fluid.Dataset, ...),
	// defaulted. It is nil when the document could not be decoded.
	Object any

	root *yaml.Node // the document's mapping node, for finding positions of field paths
}

// ID names the document as messages do: "Service default/sd-backend".
func (d *Document) ID() string {
	switch {
	case d.Name == "":
		return d.Kind
	case d.Namespace == "":
		return d.Kind + " " + d.Name
	}
	return fmt.Sprintf("%s %s/%s", d.Kind, d.Namespace, d.Name)
}

// key identifies an object across the set: kinds of different groups may share a name.
func (d *Document) key() string {
	return d.Group + "/" + d.Kind + "/" + d.Namespace + "/" + d.Name
}

// position returns where a field path of the document is, and the path as messages render it.
func (d *Document) position(path string) (Position, string) {
	if d.root == nil {
		return d.Pos, path
	}
	rendered, n := resolvePath(d.root, path)
	return Position{File: d.Pos.File, Line: n.Line, Col: n.Column}, rendered
}

// rawDoc is a document split from a source, not yet typed.
type rawDoc struct {
	pos  Position
	root *yaml.Node
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// splitDocuments parses a multi-document YAML source into document nodes. A syntax error ends
// the file (the parser cannot resynchronise) and is reported with its line, and its column where
// it can be told.
func splitDocuments(src Source) ([]rawDoc, Problems) {
	var docs []rawDoc
	dec := yaml.NewDecoder(bytes.NewReader(src.Data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return docs, Problems{syntaxProblem(src, err)}
		}
		if n.Kind != yaml.DocumentNode || len(n.Content) == 0 || isNull(n.Content[0]) {
			continue // an empty document, e.g. after a trailing "---"
		}
		root := n.Content[0]
		if root.Kind != yaml.MappingNode {
			return docs, Problems{{
				Pos:     Position{File: src.Name, Line: root.Line, Col: root.Column},
				Message: fmt.Sprintf("a document must be an object with apiVersion and kind, got %s", describe(root)),
			}}
		}
		docs = append(docs, rawDoc{pos: Position{File: src.Name, Line: root.Line, Col: root.Column}, root: root})
	}
}

func syntaxProblem(src Source, err error) Problem {
	msg := err.Error()
	p := Problem{Pos: Position{File: src.Name}, Message: "YAML syntax error: " + strings.TrimPrefix(msg, "yaml: ")}
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		p.Pos.Line = line
		p.Message = "YAML syntax error: " + m[2]
		text := sourceLine(src.Data, line)
		if i := strings.IndexByte(text, '\t'); i >= 0 && strings.TrimLeft(text[:i], " ") == "" {
			p.Pos.Col = i + 1
			p.Message += " (a tab indents this line: YAML indentation must use spaces)"
		} else if i := strings.IndexByte(text, '\t'); i >= 0 && strings.Contains(m[2], "cannot start any token") {
			p.Pos.Col = i + 1
			p.Message += " (a tab here: YAML does not allow tabs outside quoted strings)"
		} else if text != "" {
			p.Pos.Col = len(text) - len(strings.TrimLeft(text, " ")) + 1
		}
	}
	return p
}

func sourceLine(data []byte, line int) string {
	for i := 1; i < line; i++ {
		j := bytes.IndexByte(data, '\n')
		if j < 0 {
			return ""
		}
		data = data[j+1:]
	}
	if j := bytes.IndexByte(data, '\n'); j >= 0 {
		data = data[:j]
	}
	return string(data)
}

// scalar returns the string value of a top-level or metadata field, "" when absent.
func scalar(m *yaml.Node, path ...string) (string, *yaml.Node) {
	n := m
	var k *yaml.Node
	for _, p := range path {
		n = deref(n)
		if n == nil || n.Kind != yaml.MappingNode {
			return "", nil
		}
		k, n = lookup(n, p)
		if n == nil {
			return "", nil
		}
	}
	n = deref(n)
	if n.Kind != yaml.ScalarNode {
		return "", k
	}
	return n.Value, k
}

func (d *Document) namePos() Position {
	pos, _ := d.position("metadata.name")
	return pos
}
