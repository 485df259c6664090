package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Key names one object. Group is "" for the core v1 API group (Secret,
// ConfigMap); Namespace is "" for cluster-scoped kinds. Kind and Name are
// required, and no field may contain a NUL byte.
type Key struct {
	Group, Kind, Namespace, Name string
}

// String renders the key the way kubectl names resources:
// "Service.serving.knative.dev default/sd-backend", "Secret default/access-key",
// or "Kind name" when the key has no namespace.
func (k Key) String() string {
	var b strings.Builder
	b.Grow(len(k.Kind) + len(k.Group) + len(k.Namespace) + len(k.Name) + 3)
	b.WriteString(k.Kind)
	if k.Group != "" {
		b.WriteByte('.')
		b.WriteString(k.Group)
	}
	b.WriteByte(' ')
	if k.Namespace != "" {
		b.WriteString(k.Namespace)
		b.WriteByte('/')
	}
	b.WriteString(k.Name)
	return b.String()
}

// maxKeySize is bbolt's limit on a key.
const maxKeySize = 32768

func (k Key) validate() error {
	switch {
	case k.Kind == "":
		return errors.New("kind is empty")
	case k.Name == "":
		return errors.New("name is empty")
	case strings.ContainsRune(k.Group+k.Kind+k.Namespace+k.Name, 0):
		return errors.New("contains a NUL byte")
	case len(k.Group)+len(k.Kind)+len(k.Namespace)+len(k.Name)+3 > maxKeySize:
		return errors.New("too long")
	}
	return nil
}

// encodeKey lays the key out as group\x00kind\x00namespace\x00name. NUL
// sorts before every other byte, so bbolt's byte order is the order of the
// (Group, Kind, Namespace, Name) tuple, and a group or group+kind prefix
// selects a contiguous range.
func encodeKey(k Key) []byte {
	b := make([]byte, 0, len(k.Group)+len(k.Kind)+len(k.Namespace)+len(k.Name)+3)
	b = append(b, k.Group...)
	b = append(b, 0)
	b = append(b, k.Kind...)
	b = append(b, 0)
	b = append(b, k.Namespace...)
	b = append(b, 0)
	return append(b, k.Name...)
}

func decodeKey(b []byte) (Key, error) {
	parts := bytes.Split(b, []byte{0})
	if len(parts) != 4 {
		return Key{}, fmt.Errorf("key %q has %d fields, want 4", b, len(parts))
	}
	k := Key{Group: string(parts[0]), Kind: string(parts[1]), Namespace: string(parts[2]), Name: string(parts[3])}
	if err := k.validate(); err != nil {
		return Key{}, fmt.Errorf("key %q: %v", b, err)
	}
	return k, nil
}

// valueFormat is the first byte of every stored value.
const valueFormat = 1

// encodeValue writes everything but the key:
//
//	format (1 byte) | generation uvarint | revision uvarint |
//	len(apiVersion) uvarint | apiVersion | len(source) uvarint | source | data
func encodeValue(o *Object) []byte {
	b := make([]byte, 0, 1+3*binary.MaxVarintLen64+len(o.APIVersion)+len(o.Source)+len(o.Data)+binary.MaxVarintLen64)
	b = append(b, valueFormat)
	b = binary.AppendUvarint(b, uint64(o.Generation))
	b = binary.AppendUvarint(b, o.Revision)
	b = binary.AppendUvarint(b, uint64(len(o.APIVersion)))
	b = append(b, o.APIVersion...)
	b = binary.AppendUvarint(b, uint64(len(o.Source)))
	b = append(b, o.Source...)
	return append(b, o.Data...)
}

// decodeValue parses a value written by encodeValue. It copies everything
// out of b, which bbolt only keeps valid for the transaction.
func decodeValue(k Key, b []byte) (Object, error) {
	o := Object{Key: k}
	if len(b) == 0 || b[0] != valueFormat {
		return o, fmt.Errorf("%s: unknown value format", k)
	}
	b = b[1:]
	gen, n := binary.Uvarint(b)
	if n <= 0 || gen == 0 || gen > 1<<62 {
		return o, fmt.Errorf("%s: bad generation", k)
	}
	b = b[n:]
	rev, n := binary.Uvarint(b)
	if n <= 0 || rev == 0 {
		return o, fmt.Errorf("%s: bad revision", k)
	}
	b = b[n:]
	var strs [2]string
	for i := range strs {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return o, fmt.Errorf("%s: bad header", k)
		}
		strs[i] = string(b[n : n+int(l)])
		b = b[n+int(l):]
	}
	o.Generation, o.Revision = int64(gen), rev
	o.APIVersion, o.Source = strs[0], strs[1]
	o.Data = bytes.Clone(b)
	if o.Data == nil {
		o.Data = []byte{}
	}
	return o, nil
}
