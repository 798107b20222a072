package fetch

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/pierrec/lz4/v4"

	"github.com/updog/updog/internal/testutil"
)

// readLZ4Frame decodes exactly one LZ4 frame from r and reads nothing
// after its end mark (and content checksum), as lz4-rs's Decoder and any
// decoder that stops at its own end marker do.
func readLZ4Frame(r io.Reader) ([]byte, error) {
	var hdr [7]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	if binary.LittleEndian.Uint32(hdr[:4]) != 0x184D2204 {
		return nil, errors.New("not an LZ4 frame")
	}
	flg, bd := hdr[4], hdr[5]
	blockChecksum, contentChecksum := flg&0x10 != 0, flg&0x04 != 0
	extra := 0
	if flg&0x08 != 0 {
		extra += 8 // content size
	}
	if flg&0x01 != 0 {
		extra += 4 // dictionary ID
	}
	// hdr[6] is the header checksum when there is no extra field; else the
	// first extra byte.
	if extra > 0 {
		if _, err := io.CopyN(io.Discard, r, int64(extra)); err != nil {
			return nil, err
		}
	}
	maxBlock := 64 << 10 << (2 * ((bd>>4)&7 - 4))
	var out bytes.Buffer
	dst := make([]byte, maxBlock)
	for {
		var sz [4]byte
		if _, err := io.ReadFull(r, sz[:]); err != nil {
			return nil, err
		}
		n := binary.LittleEndian.Uint32(sz[:])
		if n == 0 {
			break
		}
		raw := n&0x80000000 != 0
		block := make([]byte, n&0x7fffffff)
		if _, err := io.ReadFull(r, block); err != nil {
			return nil, err
		}
		if blockChecksum {
			if _, err := io.CopyN(io.Discard, r, 4); err != nil {
				return nil, err
			}
		}
		if raw {
			out.Write(block)
			continue
		}
		k, err := lz4.UncompressBlock(block, dst)
		if err != nil {
			return nil, err
		}
		out.Write(dst[:k])
	}
	if contentChecksum {
		if _, err := io.CopyN(io.Discard, r, 4); err != nil {
			return nil, err
		}
	}
	return out.Bytes(), nil
}

// TestVerifierFinishAfterDecoderStops: a decompressor stops at its own end
// marker and never reads what follows, so the Verifier's reader never
// reaches EOF; Finish drains the rest and gives the verdict. Bottlerocket's
// sample.raw.lz4.trailing-garbage is a valid frame followed by "EVIL".
func TestVerifierFinishAfterDecoderStops(t *testing.T) {
	dir := testutil.Bottlerocket(t, "lz4")
	read := func(name string) []byte {
		b, err := os.ReadFile(dir + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	raw, clean, trailing := read("sample.raw"), read("sample.raw.lz4"), read("sample.raw.lz4.trailing-garbage")
	sum := func(b []byte) map[string][]byte { s := sha256.Sum256(b); return map[string][]byte{"sha256": s[:]} }
	tampered := bytes.Clone(trailing)
	tampered[len(tampered)-1] ^= 1 // "EVIL" -> "EVIM": the frame still decodes
	for _, c := range []struct {
		name        string
		served      []byte
		signed      []byte
		wantErr     error
		wantDrained int64
	}{
		{"signed with its trailing bytes", trailing, trailing, nil, 4},
		{"trailing bytes not signed", trailing, clean, ErrTooLong, 0},
		{"shorter than signed", clean, trailing, ErrTooShort, 0},
		{"trailing bytes tampered", tampered, trailing, ErrHash, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, err := NewVerifier(bytes.NewReader(c.served), int64(len(c.signed)), sum(c.signed))
			if err != nil {
				t.Fatal(err)
			}
			out, err := readLZ4Frame(v)
			if err != nil {
				t.Fatalf("decoding: %v", err)
			}
			if !bytes.Equal(out, raw) {
				t.Fatalf("decoded %d bytes, not sample.raw", len(out))
			}
			drained, err := v.Finish()
			if c.wantErr == nil && err != nil || c.wantErr != nil && !errors.Is(err, c.wantErr) {
				t.Fatalf("Finish: %v, want %v", err, c.wantErr)
			}
			if drained != c.wantDrained {
				t.Errorf("drained %d bytes, want %d", drained, c.wantDrained)
			}
			// The verdict is sticky.
			if d2, err2 := v.Finish(); d2 != 0 || fmt.Sprint(err2) != fmt.Sprint(err) {
				t.Errorf("second Finish: %d %v", d2, err2)
			}
		})
	}
}

// TestVerifierFinishAfterFullRead: Finish after a consumer read to EOF
// drains nothing and agrees with the EOF verdict.
func TestVerifierFinishAfterFullRead(t *testing.T) {
	data := []byte("the signed image")
	s := sha256.Sum256(data)
	v, _ := NewVerifier(bytes.NewReader(data), int64(len(data)), map[string][]byte{"sha256": s[:]})
	if _, err := io.Copy(io.Discard, v); err != nil {
		t.Fatal(err)
	}
	if n, err := v.Finish(); n != 0 || err != nil {
		t.Fatalf("Finish: %d %v", n, err)
	}
	// A source error is sticky and is Finish's verdict.
	boom := errors.New("boom")
	v, _ = NewVerifier(io.MultiReader(bytes.NewReader(data[:3]), errReader{boom}), int64(len(data)), map[string][]byte{"sha256": s[:]})
	if _, err := v.Finish(); !errors.Is(err, boom) {
		t.Fatalf("Finish over a failing source: %v", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// A verifier saved half way and resumed in a new one gives the verdict of
// one that read everything.
func TestVerifierStateResumes(t *testing.T) {
	data := bytes.Repeat([]byte("checkpoint "), 10000)
	sum := sha256.Sum256(data)
	hashes := map[string][]byte{"sha256": sum[:]}
	v, _ := NewVerifier(bytes.NewReader(data[:40000]), int64(len(data)), hashes)
	buf := make([]byte, 40000)
	io.ReadFull(v, buf)
	off, st, err := v.State()
	if err != nil || off != 40000 {
		t.Fatalf("state: %d %v", off, err)
	}
	v2, err := NewVerifierAt(bytes.NewReader(data[40000:]), int64(len(data)), hashes, off, st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v2.Finish(); err != nil {
		t.Fatalf("resumed verdict: %v", err)
	}
	bad := append([]byte(nil), data[40000:]...)
	bad[5] ^= 1
	v3, _ := NewVerifierAt(bytes.NewReader(bad), int64(len(data)), hashes, off, st)
	if _, err := v3.Finish(); !errors.Is(err, ErrHash) {
		t.Fatalf("tampered tail: %v", err)
	}
	if _, err := NewVerifierAt(bytes.NewReader(nil), int64(len(data)), hashes, off, map[string][]byte{"sha256": []byte("junk")}); err == nil {
		t.Fatal("a junk state was accepted")
	}
}
