package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
)

// field is one member of a JSON object, in document order.
type field struct {
	key string
	val json.RawMessage
}

// object is a JSON object as its members, in order. Unknown members are
// carried through edits in one of these.
type object []field

// decodeObject splits a JSON object into its members, refusing duplicate
// keys (encoding/json would silently keep the last).
func decodeObject(raw []byte, what string) (object, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("%s: want a JSON object, got %v", what, tok)
	}
	var out object
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		key := tok.(string)
		if seen[key] {
			return nil, fmt.Errorf("%s: key %q appears twice", what, key)
		}
		seen[key] = true
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return nil, fmt.Errorf("%s: %q: %w", what, key, err)
		}
		out = append(out, field{key, val})
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: data after the object", what)
	}
	return out, nil
}

// take removes and returns the member named key.
func (o *object) take(key string) (json.RawMessage, bool) {
	for i, f := range *o {
		if f.key == key {
			*o = slices.Delete(*o, i, i+1)
			return f.val, true
		}
	}
	return nil, false
}

// takeInto decodes the member named key into dst; a missing member is an
// error when required.
func (o *object) takeInto(key string, dst any, required bool, what string) error {
	raw, ok := o.take(key)
	if !ok || string(raw) == "null" {
		if required {
			return fmt.Errorf("%s: %q is missing", what, key)
		}
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return fmt.Errorf("%s: %q: %w", what, key, err)
	}
	return nil
}

// encode writes the known members in the given order, skipping nil ones,
// then the unknown members as they were.
func encode(known []field, extra object) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	n := 0
	for _, f := range append(slices.Clone(known), extra...) {
		if f.val == nil {
			continue
		}
		if n > 0 {
			b.WriteByte(',')
		}
		n++
		k, _ := json.Marshal(f.key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(f.val)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// raw marshals v for encode; omitIfZero drops it.
func raw(v any, omit bool) json.RawMessage {
	if omit {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only our own plain types reach here
	}
	return b
}
