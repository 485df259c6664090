package manifest

import (
	"encoding/json"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// Redacted replaces every Secret value that infera prints: secrets never reach a terminal or a log.
const Redacted = "<redacted>"

// Print writes the typed, defaulted objects as YAML (documents separated by ---) or as a JSON
// list. Secret values are redacted.
func Print(w io.Writer, docs []*Document, format string) error {
	objs := make([]any, 0, len(docs))
	for _, d := range docs {
		if d.Object == nil {
			continue
		}
		objs = append(objs, redact(d.Object))
	}
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"apiVersion": "v1", "kind": "List", "items": objs})
	case "yaml":
		for i, o := range objs {
			out, err := yaml.Marshal(o)
			if err != nil {
				return fmt.Errorf("manifest: print: %w", err)
			}
			if i > 0 {
				if _, err := io.WriteString(w, "---\n"); err != nil {
					return err
				}
			}
			if _, err := w.Write(out); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("manifest: print: unknown format %q", format)
}

// redact returns a Secret with every value replaced; other objects unchanged.
func redact(obj any) any {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return obj
	}
	c := s.DeepCopy()
	for k := range c.Data {
		c.Data[k] = []byte(Redacted)
	}
	for k := range c.StringData {
		c.StringData[k] = Redacted
	}
	return c
}
