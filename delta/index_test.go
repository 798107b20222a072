package delta

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math/rand"
	"os"
	"reflect"
	"testing"
)

// testIndex is a valid index of frames frames of 64 KiB (the last one
// shorter), with ids and lengths from seed.
func testIndex(frames int, seed int64, verity bool) *Index {
	rnd := rand.New(rand.NewSource(seed))
	x := &Index{BlockSize: BlockSize, FrameSize: DefaultFrameSize, Hash: HashSHA256, Salt: []byte("a salt"),
		ImageSize: int64(frames-1)*DefaultFrameSize + 3*BlockSize, Seekable: File{Name: "r-root.ext4.seek.zst"}}
	x.Frames = make([]Frame, frames)
	for i := range x.Frames {
		rnd.Read(x.Frames[i].ID[:])
		x.Frames[i].CLen = uint32(1 + rnd.Intn(70000))
		x.Seekable.Length += int64(x.Frames[i].CLen)
	}
	x.Seekable.Length += 100
	rnd.Read(x.Seekable.SHA256[:])
	if verity {
		x.Verity = &HashImage{HashBlockSize: 4096, Length: 40960}
		rnd.Read(x.Verity.UUID[:])
		rnd.Read(x.Verity.SHA256[:])
	}
	return x
}

func TestIndexRoundTrip(t *testing.T) {
	for _, v := range []bool{false, true} {
		x := testIndex(17, 1, v)
		b, err := x.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != 8+4+4+4+8+4+1+6+2+6+2+len(x.Seekable.Name)+8+32+1+map[bool]int{true: 60}[v]+17*36+32 {
			t.Errorf("%d bytes", len(b))
		}
		back, err := Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, x) {
			t.Fatalf("round trip:\n%+v\n%+v", back, x)
		}
	}
}

// reseal recomputes an index's trailing checksum after an edit.
func reseal(b []byte) []byte {
	b = append([]byte(nil), b...)
	s := sha256.Sum256(b[:len(b)-32])
	copy(b[len(b)-32:], s[:])
	return b
}

// TestHostileIndex: every truncation, a flipped byte, and each field made
// inconsistent (with a valid checksum) is refused with ErrIndex, without
// a panic or an allocation beyond the input.
func TestHostileIndex(t *testing.T) {
	x := testIndex(5, 2, true)
	good, _ := x.Marshal()
	for n := 0; n < len(good); n++ {
		if _, err := Parse(good[:n]); !errors.Is(err, ErrIndex) {
			t.Fatalf("truncated to %d bytes: %v", n, err)
		}
		if n > 40 {
			if _, err := Parse(reseal(good[:n])); !errors.Is(err, ErrIndex) {
				t.Fatalf("truncated to %d bytes, resealed: %v", n, err)
			}
		}
	}
	flip := append([]byte(nil), good...)
	flip[100] ^= 1
	if _, err := Parse(flip); !errors.Is(err, ErrIndex) {
		t.Errorf("a flipped byte: %v", err)
	}
	le32 := func(off int, v uint32) []byte {
		b := append([]byte(nil), good...)
		binary.LittleEndian.PutUint32(b[off:], v)
		return reseal(b)
	}
	le64 := func(off int, v uint64) []byte {
		b := append([]byte(nil), good...)
		binary.LittleEndian.PutUint64(b[off:], v)
		return reseal(b)
	}
	frames := len(good) - 32 - 5*36
	for name, b := range map[string][]byte{
		"magic":                  reseal(append([]byte("XPDOGDIX"), good[8:]...)),
		"version":                le32(8, 3),
		"version 2, no appendix": le32(8, 2),
		"block size 3000":        le32(12, 3000),
		"block size 0":           le32(12, 0),
		"frame size 5000":        le32(16, 5000),
		"frame size huge":        le32(16, 1<<30),
		"image size odd":         le64(20, uint64(x.ImageSize)+1),
		"image size negative":    le64(20, 1<<63),
		"image size too big":     le64(20, 1<<50),
		"more frames claimed":    le32(28, 6),
		"billions of frames":     le32(28, 1<<31),
		"hash name":              reseal(append(append(append([]byte(nil), good[:33]...), "sha512"...), good[39:]...)),
		"zero compressed frame":  le32(frames+32, 0),
		"huge compressed frame":  le32(frames+32, 1<<20),
		"frames past the file":   le64(33+6+2+6+2+len(x.Seekable.Name), 10),
		"verity flag":            reseal(append(append(append([]byte(nil), good[:frames-61]...), 7), good[frames-60:]...)),
		"hash image length":      le64(frames-60+16+4, 4097),
		"hash block size":        le32(frames-60+16, 8192),
	} {
		if _, err := Parse(b); !errors.Is(err, ErrIndex) {
			t.Errorf("%s: %v", name, err)
		}
	}
	for _, name := range []string{"", "a/b", "..", "x\x00y", string(make([]byte, 300))} {
		y := testIndex(3, 3, false)
		y.Seekable.Name = name
		if _, err := y.Marshal(); !errors.Is(err, ErrIndex) {
			t.Errorf("seekable name %q: %v", name, err)
		}
	}
}

// FuzzParse: arbitrary bytes never panic; what parses marshals back to
// the same bytes and parses to the same index. Seeds: indexes with and
// without a verity description, with an appendix, and the version 1
// golden file.
func FuzzParse(f *testing.F) {
	for i, v := range []bool{false, true} {
		b, _ := testIndex(3+i, int64(i), v).Marshal()
		f.Add(b)
	}
	b, err := appendixIndex(f, blocks("abcdMfghijNOmnopqP"), "1:0", "2:2,3", "4:1").Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	if b, err = os.ReadFile("testdata/index-v1.didx"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("UPDOGDIX"))
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrIndex) {
				t.Fatalf("an error that is not ErrIndex: %v", err)
			}
			if _, err := Parse(reseal(append(b, make([]byte, 32)...))); err != nil && !errors.Is(err, ErrIndex) {
				t.Fatalf("resealed: an error that is not ErrIndex: %v", err)
			}
			return
		}
		out, err := x.Marshal()
		if err != nil {
			t.Fatalf("a parsed index does not marshal: %v", err)
		}
		if string(out) != string(b) {
			t.Fatal("marshal(parse(b)) != b")
		}
		back, err := Parse(out)
		if err != nil || !reflect.DeepEqual(back, x) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
