package updater

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/manifest"
	"github.com/updog/updog/repo"
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

type bufferAt struct{ b []byte }

func (w *bufferAt) WriteAt(p []byte, off int64) (int, error) {
	if end := off + int64(len(p)); end > int64(len(w.b)) {
		w.b = append(w.b, make([]byte, end-int64(len(w.b)))...)
	}
	copy(w.b[off:], p)
	return len(p), nil
}

// TestZstdChecksumOnlyWhereUnchecked: a zstd frame whose content checksum
// is wrong fails an image whose output nothing else checks (the boot and
// hash images), and is let through for the root, whose every output byte
// its dm-verity tree checks as it is written. Both as independent frames
// (with their size) and as a stream.
func TestZstdChecksumOnlyWhereUnchecked(t *testing.T) {
	t.Parallel()
	payload := bytes.Repeat([]byte("checked twice is once too many. "), 40000)
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(true))
	if err != nil {
		t.Fatal(err)
	}
	frames := enc.EncodeAll(payload[:len(payload)/2], nil)
	frames = enc.EncodeAll(payload[len(payload)/2:], frames)
	stream := compress(t, CodecZstd, payload)
	for name, comp := range map[string][]byte{"frames": frames, "stream": stream} {
		bad := bytes.Clone(comp)
		bad[len(bad)-1] ^= 0xff // the last frame's checksum
		for _, checked := range []bool{false, true} {
			d, err := openSourceAt(context.Background(), bytes.NewReader(bad), "", 0, 0, nil, 2, nil, checked)
			if err != nil {
				t.Fatal(err)
			}
			var out bufferAt
			_, err = copyImage(context.Background(), d.src, &out, 0, 1<<30, nil, nil, nil, nil)
			if checked && (err != nil || !bytes.Equal(out.b, payload)) {
				t.Errorf("%s, checked output: %d bytes, %v", name, len(out.b), err)
			}
			if !checked && err == nil {
				t.Errorf("%s, unchecked output: a wrong checksum went through", name)
			}
		}
	}
}

// TestZstdChecksumInstall: through an install, a signed release whose
// root image's last zstd checksum is wrong installs (its every data
// block is checked against the dm-verity tree as it is written), and one
// whose boot image's is wrong is refused as corrupt (nothing else checks
// the boot image's output), with the active set untouched.
func TestZstdChecksumInstall(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{KindRoot, KindBoot} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			f.codec = CodecZstd
			r := f.addRelease("1.1.0", func(u *manifest.Update, files map[string][]byte) {
				name := map[string]string{KindRoot: u.Images.Root, KindBoot: u.Images.Boot}[kind]
				files[name][len(files[name])-1] ^= 0xff
			})
			f.publish(repo.Options{})
			before := f.snapshotActive()
			_, err := f.updater().Update(context.Background(), UpdateOptions{Apply: true})
			if kind == KindRoot {
				if err != nil {
					t.Fatalf("a root whose output the tree checks: %v", err)
				}
				f.assertSetHolds(gptprio.SetB, r)
				return
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("a boot image with a wrong checksum: %v", err)
			}
			f.assertSafe(before)
		})
	}
}
