package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/updog/updog/delta"
	"github.com/updog/updog/internal/safefile"
	"github.com/updog/updog/internal/testutil"
)

// seekImage is a test image: text-like, random and zero stretches, a
// whole number of 4 KiB blocks but not of frames.
func seekImage(blocks int) []byte {
	rnd := rand.New(rand.NewSource(int64(blocks)))
	b := make([]byte, blocks*4096)
	for i := 0; i < len(b); i += 4096 {
		switch (i / 4096) % 7 {
		case 0, 1, 2:
			for j := i; j < i+4096; j++ {
				b[j] = byte('a' + rnd.Intn(20))
			}
		case 3:
			rnd.Read(b[i : i+4096])
		}
	}
	return b
}

// readSeekTable parses a seekable file's seek table (no checksums) and
// returns its frames' compressed and decompressed sizes.
func readSeekTable(t *testing.T, f []byte) (clen, dlen []uint32) {
	t.Helper()
	if len(f) < 17 || binary.LittleEndian.Uint32(f[len(f)-4:]) != seekableMagic || f[len(f)-5] != 0 {
		t.Fatal("no seek table footer")
	}
	n := int(binary.LittleEndian.Uint32(f[len(f)-9:]))
	size := n*8 + 9
	start := len(f) - size - 8
	if start < 0 || binary.LittleEndian.Uint32(f[start:]) != seekTableMagic || int(binary.LittleEndian.Uint32(f[start+4:])) != size {
		t.Fatal("no seek table skippable frame")
	}
	for i := 0; i < n; i++ {
		e := f[start+8+i*8:]
		clen = append(clen, binary.LittleEndian.Uint32(e))
		dlen = append(dlen, binary.LittleEndian.Uint32(e[4:]))
	}
	return clen, dlen
}

// TestSeekableWriter: the file decodes (with our decoder and with zstd
// -dc) to the image; its seek table and its index describe its frames;
// each frame decodes alone to its part of the image, whose id the index
// gives; WriteZeros makes the same bytes as writing the zeros.
func TestSeekableWriter(t *testing.T) {
	t.Parallel()
	img := seekImage(16*40 + 5) // 40 frames and 5 blocks
	copy(img[20*65536:], make([]byte, 3*65536))
	salt := []byte("salt")
	write := func(zeros bool) ([]byte, *delta.Index) {
		var out bytes.Buffer
		w, err := NewSeekableWriter(&out, SeekableOptions{Salt: salt, Workers: 3})
		if err != nil {
			t.Fatal(err)
		}
		rest := img
		for len(rest) > 0 {
			n := min(len(rest), 100000)
			if zeros && bytes.Equal(rest[:n], make([]byte, n)) {
				if err := w.WriteZeros(int64(n)); err != nil {
					t.Fatal(err)
				}
			} else if _, err := w.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte{1}); !errors.Is(err, ErrSeekable) {
			t.Errorf("write after Close: %v", err)
		}
		x, err := w.Index("img.seek.zst")
		if err != nil {
			t.Fatal(err)
		}
		return out.Bytes(), x
	}
	file, x := write(false)
	if z, _ := write(true); !bytes.Equal(z, file) {
		t.Error("WriteZeros made other bytes than Write")
	}
	dec, _ := zstd.NewReader(nil)
	defer dec.Close()
	if got, err := dec.DecodeAll(file, nil); err != nil || !bytes.Equal(got, img) {
		t.Fatalf("the file does not decode to the image: %v", err)
	}
	t.Run("zstd -dc", func(t *testing.T) {
		zs := testutil.Tool(t, "zstd")
		p := filepath.Join(t.TempDir(), "f.zst")
		if err := os.WriteFile(p, file, 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := exec.Command(zs, "-dc", p).Output(); err != nil || !bytes.Equal(got, img) {
			t.Fatalf("zstd -dc does not decode the seekable file to the image: %v", err)
		}
	})
	sum := sha256.Sum256(file)
	if x.Seekable.Length != int64(len(file)) || x.Seekable.SHA256 != sum || x.ImageSize != int64(len(img)) || len(x.Frames) != 41 {
		t.Fatalf("index %+v", x.Seekable)
	}
	clen, dlen := readSeekTable(t, file)
	if len(clen) != 41 || dlen[40] != 5*4096 {
		t.Fatalf("seek table of %d frames, last %d", len(clen), dlen[len(dlen)-1])
	}
	fd, err := delta.NewFrameDecoder(x.FrameSize)
	if err != nil {
		t.Fatal(err)
	}
	offs := x.Offsets()
	h := x.NewHasher()
	for i, f := range x.Frames {
		if f.CLen != clen[i] {
			t.Fatalf("frame %d: index %d bytes, seek table %d", i, f.CLen, clen[i])
		}
		off, n := x.FrameRange(i)
		out, err := fd.Decode(file[offs[i]:offs[i+1]], int(n))
		if err != nil || !bytes.Equal(out, img[off:off+n]) {
			t.Fatalf("frame %d does not decode alone to its bytes: %v", i, err)
		}
		if err := x.Check(h, i, out); err != nil {
			t.Fatal(err)
		}
	}
	b, err := x.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if back, err := delta.Parse(b); err != nil || len(back.Frames) != len(x.Frames) {
		t.Fatalf("index round trip: %v", err)
	}
}

// TestSeekableWriterRefuses: an image that is not whole blocks, an empty
// one and a bad frame size are refused.
func TestSeekableWriterRefuses(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	w, _ := NewSeekableWriter(&out, SeekableOptions{})
	w.Write(make([]byte, 5000))
	if err := w.Close(); !errors.Is(err, ErrSeekable) {
		t.Errorf("a partial block: %v", err)
	}
	w, _ = NewSeekableWriter(&out, SeekableOptions{})
	if err := w.Close(); !errors.Is(err, ErrSeekable) {
		t.Errorf("an empty image: %v", err)
	}
	for _, fs := range []int{1000, 4096 + 512, delta.MaxFrameSize * 2} {
		if _, err := NewSeekableWriter(&out, SeekableOptions{FrameSize: fs}); !errors.Is(err, ErrSeekable) {
			t.Errorf("frame size %d: %v", fs, err)
		}
	}
}

// TestBuildDelta: a build makes the seekable root image and its index:
// the seekable file decodes to ROOT-A, the index describes it (name,
// length, sha256, frames) and the hash image (UUID, length, sha256 of the
// uncompressed hash artifact), with the verity salt; release.json names
// both and they go into the manifest's images. NoDelta leaves them out.
func TestBuildDelta(t *testing.T) {
	dir := t.TempDir()
	o := testInputs(t, dir)
	o.NoDisk = true
	res, err := Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	r := res.Release
	if r.Delta == nil || r.Delta.FrameSize != delta.DefaultFrameSize {
		t.Fatalf("no delta artifacts: %+v", r.Delta)
	}
	seekName, idxName := DeltaNames(r.Name, r.Variant, r.Arch, r.Version, r.RootFS)
	if r.Delta.Seekable.Target != seekName || r.Delta.Index.Target != idxName ||
		seekName != "updog-test-x86_64-1.0.0-root.ext4.seek.zst" || idxName != "updog-test-x86_64-1.0.0-root.ext4.didx" {
		t.Fatalf("names %q %q", r.Delta.Seekable.Target, r.Delta.Index.Target)
	}
	if mi := r.ManifestImages(); mi.Delta == nil || mi.Delta.Seekable != seekName || mi.Delta.Index != idxName {
		t.Fatalf("manifest images %+v", mi.Delta)
	}
	js, _ := safefile.ReadFile(filepath.Join(o.Out, ReleaseFileName), MaxReleaseFile)
	if back, err := ParseRelease(js); err != nil || back.Delta == nil || *back.Delta != *r.Delta {
		t.Fatalf("release.json: %v", err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(o.Out, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	seek, idxb := read(seekName), read(idxName)
	root := decompress(t, CompressZstd, read(r.Images.Root.Target))
	hash := decompress(t, CompressZstd, read(r.Images.Hash.Target))
	if !bytes.Equal(decompress(t, CompressZstd, seek), root) {
		t.Fatal("the seekable file does not decode to the root image")
	}
	x, err := delta.Parse(idxb)
	if err != nil {
		t.Fatal(err)
	}
	ssum, isum, hsum := sha256.Sum256(seek), sha256.Sum256(idxb), sha256.Sum256(hash)
	if x.Seekable.Name != seekName || x.Seekable.Length != int64(len(seek)) || x.Seekable.SHA256 != ssum ||
		r.Delta.Seekable.SHA256 != hex.EncodeToString(ssum[:]) || r.Delta.Index.SHA256 != hex.EncodeToString(isum[:]) ||
		r.Delta.Index.Length != int64(len(idxb)) || x.ImageSize != r.Images.Root.Size {
		t.Fatalf("the index does not describe the seekable file: %+v", x.Seekable)
	}
	if hex.EncodeToString(x.Salt) != r.Verity.Salt || x.BlockSize != r.Verity.DataBlockSize {
		t.Errorf("the index's salt %x is not the verity salt %s", x.Salt, r.Verity.Salt)
	}
	if v := x.Verity; v == nil || v.Length != int64(len(hash)) || v.SHA256 != hsum || v.HashBlockSize != r.Verity.HashBlockSize ||
		verityUUID(v.UUID) != r.Verity.UUID {
		t.Errorf("the index's hash image %+v does not describe the hash artifact", x.Verity)
	}
	h := x.NewHasher()
	for i := range x.Frames {
		off, n := x.FrameRange(i)
		if err := x.Check(h, i, root[off:off+n]); err != nil {
			t.Fatal(err)
		}
	}
	// The appendix: within its bound, each entry's blocks the root's.
	if x.AppendixSize() > len(root)/deltaAppendixShare {
		t.Errorf("an appendix of %d bytes for a %d-byte root", x.AppendixSize(), len(root))
	}
	dec, err := delta.NewFrameDecoder(x.FrameSize)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	for _, m := range x.Mixed {
		out, err := x.MixedBlocks(dec, h, &m)
		if err != nil {
			t.Fatal(err)
		}
		off, _ := x.FrameRange(m.Frame)
		for j, p := range m.Blocks {
			at := off + int64(p)*delta.BlockSize
			if !bytes.Equal(out[j*delta.BlockSize:(j+1)*delta.BlockSize], root[at:at+delta.BlockSize]) {
				t.Fatalf("appendix frame %d block %d", m.Frame, p)
			}
		}
	}
	t.Logf("index %d bytes, its appendix %d (%d frames)", len(idxb), x.AppendixSize(), len(x.Mixed))

	o2 := testInputs(t, t.TempDir())
	o2.NoDisk, o2.NoDelta = true, true
	res, err = Build(context.Background(), o2)
	if err != nil {
		t.Fatal(err)
	}
	if res.Release.Delta != nil || res.Release.ManifestImages().Delta != nil || len(res.Files) != 4 {
		t.Fatalf("NoDelta made %v", res.Files)
	}
	testutil.Tool(t, "mke2fs")
}

func verityUUID(u [16]byte) string { return formatUUID(u) }

// TestBuildDeltaFrameSize: the frame size is an option, checked.
func TestBuildDeltaFrameSize(t *testing.T) {
	o := BuildOptions{Kernel: "k", RootFS: "r", Out: "o", Variant: "v", Arch: "x86_64", Version: "1.0.0", DeltaFrameSize: 5000}
	if err := o.Check(); !errors.Is(err, ErrOptions) {
		t.Fatalf("frame size 5000: %v", err)
	}
	o.DeltaFrameSize = 0
	if err := o.Check(); err != nil || o.DeltaFrameSize != delta.DefaultFrameSize {
		t.Fatalf("default: %v %d", err, o.DeltaFrameSize)
	}
}
