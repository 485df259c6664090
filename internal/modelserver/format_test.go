package modelserver

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// stFile builds a safetensors file from a JSON header and dataLen zero bytes.
func stFile(js string, dataLen int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(js)))
	b = append(b, js...)
	return append(b, make([]byte, dataLen)...)
}

func TestParseHeader(t *testing.T) {
	const two = `"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[16,24]}`
	tests := []struct {
		name    string
		file    []byte
		wantErr string // "" for success
	}{
		{"valid", stFile(`{"__metadata__":{"format":"pt"},`+two+`}`, 24), ""},
		{"valid padded", stFile(`{`+two+`}    `, 24), ""},
		{"valid out of order", stFile(`{"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]},"a":{"dtype":"I16","shape":[1],"data_offsets":[0,2]}}`, 3), ""},
		{"valid empty tensor", stFile(`{"z":{"dtype":"F64","shape":[0,3],"data_offsets":[0,0]}}`, 0), ""},
		{"valid no tensors", stFile(`{}`, 0), ""},
		{"empty file", nil, "too short for the 8-byte header length"},
		{"short file", []byte{1, 2, 3}, "too short"},
		{"header past end", binary.LittleEndian.AppendUint64(nil, 100), "exceeds the 0 bytes that follow it (file truncated?)"},
		{"header over limit", binary.LittleEndian.AppendUint64(nil, 1<<62), "exceeds the limit"},
		{"header too small", stFile(`{`, 0), "too small"},
		{"not an object", stFile(`[1, 2]`, 0), "does not start with '{'"},
		{"invalid JSON", stFile(`{"a":{"dtype":"F32",}}`, 0), "invalid"},
		{"truncated JSON", stFile(`{"a":{"dtype":"F32"`, 0), "invalid JSON"},
		{"trailing garbage", stFile(`{} x`, 0), "unexpected data after the JSON object"},
		{"duplicate key", stFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, 2), `duplicate key "a"`},
		{"bad metadata", stFile(`{"__metadata__":{"n":1}}`, 0), "__metadata__ must map strings to strings"},
		{"unknown field", stFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"x":1}}`, 1), `unknown field "x"`},
		{"unknown dtype", stFile(`{"a":{"dtype":"F12","shape":[1],"data_offsets":[0,1]}}`, 1), `unknown dtype "F12"`},
		{"missing dtype", stFile(`{"a":{"shape":[1],"data_offsets":[0,1]}}`, 1), "missing dtype"},
		{"missing shape", stFile(`{"a":{"dtype":"U8","data_offsets":[0,1]}}`, 1), "missing shape"},
		{"null tensor", stFile(`{"a":null}`, 0), "missing dtype"},
		{"one offset", stFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[1]}}`, 1), "data_offsets must be [begin, end]"},
		{"descending offsets", stFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[1,0]}}`, 1), "not an ascending pair"},
		{"negative offset", stFile(`{"a":{"dtype":"U8","shape":[0],"data_offsets":[-1,-1]}}`, 1), "not an ascending pair"},
		{"negative dim", stFile(`{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}`, 1), "negative dimension"},
		{"fractional dim", stFile(`{"a":{"dtype":"U8","shape":[1.5],"data_offsets":[0,1]}}`, 1), "cannot unmarshal"},
		{"shape overflow", stFile(`{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,1]}}`, 1), "overflows"},
		{"size mismatch", stFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, 4), "needs 8 bytes, data_offsets [0, 4] hold 4"},
		{"offset overflow", stFile(`{"a":{"dtype":"U8","shape":[9223372036854775807],"data_offsets":[0,9223372036854775807]}}`, 4), "reach past the end of the 4-byte data section (file truncated?)"},
		{"offset beyond int64", stFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,99999999999999999999]}}`, 4), "cannot unmarshal"},
		{"truncated data", stFile(`{`+two+`}`, 20), `tensor "b": data_offsets [16, 24] reach past the end of the 20-byte data section`},
		{"trailing data", stFile(`{`+two+`}`, 30), "tensors cover 24 bytes but the data section is 30 bytes"},
		{"gap", stFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, 2), "leave a gap at byte 0"},
		{"overlap", stFile(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, 2), "overlap"},
		{"empty name", stFile(`{"":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 1), "empty name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := parseHeader(tt.file)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("parseHeader: %v", err)
				}
				checkHeaderInvariants(t, h, tt.file)
				return
			}
			if err == nil {
				t.Fatalf("parseHeader succeeded, want error containing %q", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalidModel) {
				t.Fatalf("parseHeader error = %q, want ErrInvalidModel containing %q", err, tt.wantErr)
			}
		})
	}
}

func checkHeaderInvariants(t *testing.T, h header, file []byte) {
	t.Helper()
	at := h.DataStart
	for _, x := range h.Tensors {
		if h.DataStart+x.Begin != at || x.End < x.Begin {
			t.Fatalf("tensor %q [%d, %d] does not follow byte %d", x.Name, x.Begin, x.End, at)
		}
		at = h.DataStart + x.End
	}
	if at != int64(len(file)) {
		t.Fatalf("tensors end at %d, file at %d", at, len(file))
	}
}

func TestEncodeHeaderRoundTrip(t *testing.T) {
	tensors := layout(shape{hidden: 64, layers: 3, vocab: 16})
	hdr, err := encodeHeader(safetensorsMetadata(42), tensors)
	if err != nil {
		t.Fatal(err)
	}
	if len(hdr)%8 != 0 {
		t.Errorf("header is %d bytes, want a multiple of 8 so the data is aligned", len(hdr))
	}
	data := tensors[len(tensors)-1].End
	h, err := parseHeader(append(hdr, make([]byte, data)...))
	if err != nil {
		t.Fatal(err)
	}
	if h.Metadata["infera.seed"] != "42" || h.Metadata["format"] != "pt" || h.Metadata["infera.synthetic"] != "true" {
		t.Errorf("metadata = %v", h.Metadata)
	}
	if len(h.Tensors) != len(tensors) {
		t.Fatalf("got %d tensors, want %d", len(h.Tensors), len(tensors))
	}
	for i := range tensors {
		g, w := h.Tensors[i], tensors[i]
		if g.Name != w.Name || g.DType != w.DType || g.Begin != w.Begin || g.End != w.End || len(g.Shape) != len(w.Shape) {
			t.Errorf("tensor %d = %+v, want %+v", i, g, w)
		}
	}
}

func FuzzParseHeader(f *testing.F) {
	hdr, err := encodeHeader(safetensorsMetadata(1), layout(shape{hidden: 64, layers: 1, vocab: 8}))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(hdr)
	f.Add(stFile(`{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}`, 16))
	f.Add(stFile(`{"__metadata__":{"k":"v"},"a":{"dtype":"U8","shape":[],"data_offsets":[0,1]}}  `, 1))
	f.Add(stFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,9223372036854775807]}}`, 1))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, file []byte) {
		h, err := parseHeader(file)
		if err != nil {
			if !errors.Is(err, ErrInvalidModel) {
				t.Fatalf("error %q does not wrap ErrInvalidModel", err)
			}
			return
		}
		checkHeaderInvariants(t, h, file)
		for _, x := range h.Tensors {
			n := dtypeSizes[x.DType]
			for _, d := range x.Shape {
				n *= d
			}
			if n != x.End-x.Begin {
				t.Fatalf("tensor %q: %d bytes for shape %v, header says %d", x.Name, n, x.Shape, x.End-x.Begin)
			}
		}
	})
}
