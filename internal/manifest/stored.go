package manifest

import (
	"encoding/json"
	"fmt"
)

// DecodeStored rebuilds a Document from the canonical JSON the state store keeps for an object
// that was applied earlier, so a new apply can refer to it (Options.Applied). The JSON was
// produced from a validated object, so it is decoded plainly, without positions; source says
// where it came from for messages.
func DecodeStored(apiVersion, kind string, data []byte, source string) (*Document, error) {
	info, msg := findKind(apiVersion, kind)
	if msg != "" {
		return nil, fmt.Errorf("manifest: stored object: %s", msg)
	}
	obj := info.new()
	if err := json.Unmarshal(data, obj); err != nil {
		return nil, fmt.Errorf("manifest: stored %s %s: %w", kind, source, err)
	}
	doc := &Document{Pos: Position{File: source}, APIVersion: apiVersion, Group: info.group, Kind: kind, Object: obj}
	if m, ok := obj.(interface {
		GetNamespace() string
		GetName() string
	}); ok {
		doc.Namespace, doc.Name = m.GetNamespace(), m.GetName()
	}
	return doc, nil
}
