package updater

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
)

type discardAt struct{ n int64 }

func (d *discardAt) WriteAt(p []byte, off int64) (int, error) {
	d.n = max(d.n, off+int64(len(p)))
	return len(p), nil
}

// decodeAll runs data through the decoder and the copy pipeline with a
// limit, as an install does.
func decodeAll(t *testing.T, data []byte, limit int64) (int64, *decoded, error) {
	t.Helper()
	d, err := openSource(context.Background(), bytes.NewReader(data), "", 0, 0, 2, nil)
	if err != nil {
		return 0, nil, err
	}
	n, err := copyImage(context.Background(), d.src, &discardAt{}, 0, limit, nil, nil, nil, nil)
	return n, d, err
}

func TestDecoderEachCodec(t *testing.T) {
	t.Parallel()
	payload := bytes.Repeat([]byte("updog decodes this. "), 50000)
	for _, c := range []Codec{CodecZstd, CodecXZ, CodecLZ4, CodecGzip, CodecRaw} {
		comp := compress(t, c, payload)
		if Sniff(comp) != c {
			t.Errorf("%s: sniffed as %s", c, Sniff(comp))
		}
		d, err := newDecoder(bytes.NewReader(comp), 2)
		if err != nil {
			t.Fatalf("%s: %v", c, err)
		}
		got, err := io.ReadAll(d)
		d.close()
		if err != nil || !bytes.Equal(got, payload) || d.leftover() != 0 {
			t.Fatalf("%s: %d bytes, %v, leftover %d", c, len(got), err, d.leftover())
		}
		// Concatenated members/frames are one image (xz: one stream only).
		if c != CodecRaw && c != CodecXZ {
			d, _ = newDecoder(bytes.NewReader(append(append([]byte(nil), comp...), comp...)), 2)
			got, err = io.ReadAll(d)
			if err != nil || len(got) != 2*len(payload) || d.leftover() != 0 {
				t.Fatalf("%s twice: %d bytes, %v", c, len(got), err)
			}
		}
	}
}

// TestAttackDecoderBombXZ: the output limit stops an xz bomb (the whole
// install path is tested with the other codecs in attack_test.go).
func TestAttackDecoderBombXZ(t *testing.T) {
	t.Parallel()
	bomb := compress(t, CodecXZ, make([]byte, 4<<20))
	n, _, err := decodeAll(t, bomb, 1<<20)
	if !errors.Is(err, ErrImageTooLarge) || n > 1<<20 {
		t.Fatalf("xz bomb: %d bytes written, %v", n, err)
	}
}

// TestAttackDecoderTrailingXZ: bytes after the last xz stream are left
// unread (and refused by the install as trailing data), or refused by the
// decoder.
func TestAttackDecoderTrailingXZ(t *testing.T) {
	t.Parallel()
	for _, tail := range [][]byte{[]byte("EVIL"), make([]byte, 4), []byte("\xfd7zXZ\x00garbage")} {
		data := append(compress(t, CodecXZ, bytes.Repeat([]byte("x"), 100000)), tail...)
		_, d, err := decodeAll(t, data, 1<<20)
		if err == nil && d.leftover() == 0 {
			t.Fatalf("trailing %q after an xz stream went unnoticed", tail)
		}
	}
}

// An xz stream asking for a dictionary beyond the limit is refused before
// the decoder allocates it.
func TestAttackDecoderXZDictionary(t *testing.T) {
	t.Parallel()
	data := compress(t, CodecXZ, []byte("small"))
	// The first block header's LZMA2 dictionary byte follows the block
	// header size, flags and filter id/properties size.
	i := 12 + 2
	for ; i < len(data)-1; i++ {
		if data[i] == 0x21 && data[i+1] == 0x01 {
			break
		}
	}
	evil := append([]byte(nil), data...)
	evil[i+2] = 38 // 1 GiB: and the CRC no longer matches, but we refuse first
	if _, err := newDecoder(bytes.NewReader(evil), 1); err == nil || !bytes.Contains([]byte(err.Error()), []byte("dictionary")) {
		t.Fatalf("huge xz dictionary: %v", err)
	}
}
