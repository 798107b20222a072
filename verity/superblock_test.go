package verity

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func goodSuperblock() Superblock {
	return Superblock{UUID: testUUID, Hash: "sha256", DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: 256, Salt: []byte{1, 2, 3}}
}

func TestSuperblockDamage(t *testing.T) {
	good, err := goodSuperblock().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		field string
		edit  func(b []byte)
	}{
		{"signature", func(b []byte) { copy(b, "veritas!") }},
		{"version", func(b []byte) { binary.LittleEndian.PutUint32(b[8:], 2) }},
		{"hash type", func(b []byte) { binary.LittleEndian.PutUint32(b[12:], 0) }},
		{"algorithm", func(b []byte) { copy(b[32:], "md5\x00") }},
		{"algorithm", func(b []byte) { copy(b[32:64], bytes.Repeat([]byte{'a'}, 32)) }},
		{"data block size", func(b []byte) { binary.LittleEndian.PutUint32(b[64:], 1000) }},
		{"hash block size", func(b []byte) { binary.LittleEndian.PutUint32(b[68:], 8192) }},
		{"data blocks", func(b []byte) { binary.LittleEndian.PutUint64(b[72:], 0) }},
		{"salt size", func(b []byte) { binary.LittleEndian.PutUint16(b[80:], 257) }},
		{"size", func(b []byte) {}},
	} {
		b := bytes.Clone(good)
		c.edit(b)
		if c.field == "size" {
			b = b[:100]
		}
		_, err := ParseSuperblock(b)
		var se *SuperblockError
		if !errors.As(err, &se) || se.Field != c.field || !errors.Is(err, ErrSuperblock) {
			t.Errorf("%s damage: got %v", c.field, err)
		}
	}
	sb, err := ParseSuperblock(good)
	if err != nil {
		t.Fatal(err)
	}
	if sb.Hash != "sha256" || sb.DataBlocks != 256 || !bytes.Equal(sb.Salt, []byte{1, 2, 3}) || sb.UUID != testUUID {
		t.Fatalf("parsed %+v", sb)
	}
}

func FuzzVeritySuperblock(f *testing.F) {
	good, _ := goodSuperblock().MarshalBinary()
	f.Add(good)
	f.Add(make([]byte, 512))
	f.Fuzz(func(t *testing.T, b []byte) {
		sb, err := ParseSuperblock(b)
		if err != nil {
			return
		}
		again, err := sb.MarshalBinary()
		if err != nil {
			t.Fatalf("a parsed superblock does not encode: %v", err)
		}
		sb2, err := ParseSuperblock(again)
		if err != nil {
			t.Fatalf("re-encoded superblock does not parse: %v", err)
		}
		if sb2.Hash != sb.Hash || sb2.DataBlocks != sb.DataBlocks || !bytes.Equal(sb2.Salt, sb.Salt) ||
			sb2.UUID != sb.UUID || sb2.DataBlockSize != sb.DataBlockSize || sb2.HashBlockSize != sb.HashBlockSize {
			t.Fatalf("round trip changed the superblock: %+v -> %+v", sb, sb2)
		}
	})
}
