package modelserver

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
)

// The safetensors format (https://github.com/huggingface/safetensors):
//
//	[8 bytes: N, little-endian uint64][N bytes: JSON header, space padded][data]
//
// The header maps tensor names to {dtype, shape, data_offsets}, offsets
// relative to the start of the data section, plus an optional
// "__metadata__" object of string to string.

// ErrInvalidModel is wrapped by every error that reports a model directory
// whose files are missing, malformed or inconsistent with each other.
var ErrInvalidModel = errors.New("invalid model")

// ErrChecksum is wrapped by the error Verify returns when the weights file's
// sha256 differs from the one recorded in config.json.
var ErrChecksum = errors.New("checksum mismatch")

// maxHeaderLen is the largest JSON header accepted; the reference
// implementation uses the same bound.
const maxHeaderLen = 100 << 20

// dtypeSizes maps the safetensors dtype names to element sizes in bytes.
var dtypeSizes = map[string]int64{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
	"U16": 2, "I16": 2, "F16": 2, "BF16": 2,
	"U32": 4, "I32": 4, "F32": 4,
	"U64": 8, "I64": 8, "F64": 8,
}

// tensorEntry is one tensor of a safetensors header.
type tensorEntry struct {
	Name  string
	DType string
	Shape []int64
	Begin int64 // offset of the first byte, relative to the data section
	End   int64 // offset one past the last byte
}

// header is a parsed and checked safetensors header.
type header struct {
	Metadata  map[string]string
	Tensors   []tensorEntry // in data order
	DataStart int64         // file offset of the data section
}

// parseHeader parses the header of the safetensors file whose complete
// contents are file; see parseHeaderPrefix.
func parseHeader(file []byte) (header, error) {
	return parseHeaderPrefix(file, int64(len(file)))
}

// headerLen reads the JSON header's length from the first 8 bytes of a
// safetensors file of size bytes, and checks it is in bounds: the loader
// reads that much more before it reads any weight.
func headerLen(first8 []byte, size int64) (int64, error) {
	if size < 8 || len(first8) < 8 {
		return 0, fmt.Errorf("%w: file is %d bytes, too short for the 8-byte header length", ErrInvalidModel, size)
	}
	n := binary.LittleEndian.Uint64(first8)
	rest := uint64(size - 8)
	switch {
	case n > maxHeaderLen:
		return 0, fmt.Errorf("%w: header length %d exceeds the limit of %d bytes", ErrInvalidModel, n, maxHeaderLen)
	case n > rest:
		return 0, fmt.Errorf("%w: header length %d exceeds the %d bytes that follow it (file truncated?)", ErrInvalidModel, n, rest)
	case n < 2:
		return 0, fmt.Errorf("%w: header length %d is too small for a JSON object", ErrInvalidModel, n)
	}
	return int64(n), nil
}

// parseHeaderPrefix parses the header of a safetensors file of size bytes
// from prefix, the file's first bytes (at least the 8-byte length and the
// JSON header; the weights after them are not looked at), and checks it
// strictly: the length is in bounds, the JSON is valid with no duplicate or
// unknown keys, every dtype is known, every tensor's byte length is its
// shape times its element size, and the tensors tile the data section
// exactly, which ends where the file ends.
func parseHeaderPrefix(prefix []byte, size int64) (header, error) {
	n, err := headerLen(prefix, size)
	if err != nil {
		return header{}, err
	}
	if int64(len(prefix)) < 8+n {
		return header{}, fmt.Errorf("%w: header of %d bytes, but only %d were read", ErrInvalidModel, n, len(prefix)-8)
	}
	rest := size - 8
	js := prefix[8 : 8+n]
	if js[0] != '{' {
		return header{}, fmt.Errorf("%w: header does not start with '{'", ErrInvalidModel)
	}
	md, tensors, err := decodeHeaderJSON(js)
	if err != nil {
		return header{}, fmt.Errorf("%w: header: %w", ErrInvalidModel, err)
	}
	dataLen := rest - n
	for _, t := range tensors {
		if t.End > dataLen {
			return header{}, fmt.Errorf("%w: tensor %q: data_offsets [%d, %d] reach past the end of the %d-byte data section (file truncated?)",
				ErrInvalidModel, t.Name, t.Begin, t.End, dataLen)
		}
	}
	slices.SortStableFunc(tensors, func(a, b tensorEntry) int {
		return cmp.Or(cmp.Compare(a.Begin, b.Begin), cmp.Compare(a.End, b.End), cmp.Compare(a.Name, b.Name))
	})
	var at int64
	for _, t := range tensors {
		if t.Begin != at {
			what := "gap"
			if t.Begin < at {
				what = "overlap"
			}
			return header{}, fmt.Errorf("%w: tensor %q: data_offsets [%d, %d] leave a %s at byte %d of the data section",
				ErrInvalidModel, t.Name, t.Begin, t.End, what, at)
		}
		at = t.End
	}
	if at != dataLen {
		return header{}, fmt.Errorf("%w: tensors cover %d bytes but the data section is %d bytes", ErrInvalidModel, at, dataLen)
	}
	return header{Metadata: md, Tensors: tensors, DataStart: 8 + n}, nil
}

// decodeHeaderJSON decodes the header object key by key so that duplicate
// keys, which encoding/json would silently merge, are rejected.
func decodeHeaderJSON(js []byte) (map[string]string, []tensorEntry, error) {
	dec := json.NewDecoder(bytes.NewReader(js))
	if _, err := dec.Token(); err != nil { // the '{', checked by the caller
		return nil, nil, fmt.Errorf("invalid JSON: %w", err)
	}
	var (
		md      map[string]string
		tensors []tensorEntry
		seen    = make(map[string]bool)
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("invalid JSON: %w", err)
		}
		key, _ := tok.(string) // object keys are always strings
		if seen[key] {
			return nil, nil, fmt.Errorf("duplicate key %q", key)
		}
		seen[key] = true
		if key == "__metadata__" {
			if err := dec.Decode(&md); err != nil {
				return nil, nil, fmt.Errorf("__metadata__ must map strings to strings: %w", err)
			}
			continue
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, fmt.Errorf("invalid JSON: %w", err)
		}
		t, err := decodeTensorEntry(key, raw)
		if err != nil {
			return nil, nil, err
		}
		tensors = append(tensors, t)
	}
	if _, err := dec.Token(); err != nil { // the '}'
		return nil, nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if pad := js[dec.InputOffset():]; len(bytes.TrimRight(pad, " \t\r\n")) != 0 {
		return nil, nil, fmt.Errorf("unexpected data after the JSON object")
	}
	return md, tensors, nil
}

func decodeTensorEntry(name string, raw json.RawMessage) (tensorEntry, error) {
	if name == "" {
		return tensorEntry{}, errors.New("tensor with an empty name")
	}
	var v struct {
		DType   *string `json:"dtype"`
		Shape   []int64 `json:"shape"`
		Offsets []int64 `json:"data_offsets"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return tensorEntry{}, fmt.Errorf("tensor %q: %w", name, err)
	}
	switch {
	case v.DType == nil:
		return tensorEntry{}, fmt.Errorf("tensor %q: missing dtype", name)
	case v.Shape == nil:
		return tensorEntry{}, fmt.Errorf("tensor %q: missing shape", name)
	case len(v.Offsets) != 2:
		return tensorEntry{}, fmt.Errorf("tensor %q: data_offsets must be [begin, end], got %d numbers", name, len(v.Offsets))
	}
	t := tensorEntry{Name: name, DType: *v.DType, Shape: v.Shape, Begin: v.Offsets[0], End: v.Offsets[1]}
	size, ok := dtypeSizes[t.DType]
	if !ok {
		return tensorEntry{}, fmt.Errorf("tensor %q: unknown dtype %q", name, t.DType)
	}
	if t.Begin < 0 || t.End < t.Begin {
		return tensorEntry{}, fmt.Errorf("tensor %q: data_offsets [%d, %d] are not an ascending pair of non-negative offsets", name, t.Begin, t.End)
	}
	n := size
	for _, d := range t.Shape {
		if d < 0 {
			return tensorEntry{}, fmt.Errorf("tensor %q: negative dimension in shape %v", name, t.Shape)
		}
		if d != 0 && n > math.MaxInt64/d {
			return tensorEntry{}, fmt.Errorf("tensor %q: shape %v of %s overflows int64 bytes", name, t.Shape, t.DType)
		}
		n *= d
	}
	if n != t.End-t.Begin {
		return tensorEntry{}, fmt.Errorf("tensor %q: shape %v of %s needs %d bytes, data_offsets [%d, %d] hold %d",
			name, t.Shape, t.DType, n, t.Begin, t.End, t.End-t.Begin)
	}
	return t, nil
}

// encodeHeader returns the 8-byte length and the JSON header for tensors,
// padded with spaces so that the data section starts 8-byte aligned.
func encodeHeader(md map[string]string, tensors []tensorEntry) ([]byte, error) {
	type entry struct {
		DType   string   `json:"dtype"`
		Shape   []int64  `json:"shape"`
		Offsets [2]int64 `json:"data_offsets"`
	}
	m := make(map[string]any, len(tensors)+1)
	if md != nil {
		m["__metadata__"] = md
	}
	for _, t := range tensors {
		m[t.Name] = entry{DType: t.DType, Shape: t.Shape, Offsets: [2]int64{t.Begin, t.End}}
	}
	js, err := json.Marshal(m) // sorts keys: the same tensors give the same bytes
	if err != nil {
		return nil, err
	}
	pad := (8 - len(js)%8) % 8
	out := make([]byte, 8, 8+len(js)+pad)
	binary.LittleEndian.PutUint64(out, uint64(len(js)+pad))
	out = append(out, js...)
	out = append(out, bytes.Repeat([]byte{' '}, pad)...)
	return out, nil
}
