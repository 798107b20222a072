package updater

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/pierrec/lz4/v4"

	"github.com/updog/updog/internal/testutil"
)

func TestXXH32KnownAnswers(t *testing.T) {
	t.Parallel()
	// Known answers of XXH32 with seed 0 (xxHash's reference).
	for in, want := range map[string]uint32{
		"":    0x02cc5d05,
		"a":   0x550d7456,
		"abc": 0x32d153ff,
		"Nobody inspects the spammish repetition": 0xe2293b2f,
	} {
		if got := xxh32Sum([]byte(in)); got != want {
			t.Errorf("xxh32(%q) = %08x, want %08x", in, got, want)
		}
	}
	// Any split of the input, and a state saved and restored at any
	// point, give the one-shot sum.
	data := lz4TestData(1000, 1)
	want := xxh32Sum(data)
	for cut := 0; cut <= len(data); cut += 7 {
		var x xxh32
		x.reset()
		x.write(data[:cut])
		var y xxh32
		if err := y.setState(x.appendState(nil)); err != nil {
			t.Fatal(err)
		}
		y.write(data[cut:])
		if got := y.sum(); got != want {
			t.Fatalf("cut at %d: %08x, want %08x", cut, got, want)
		}
	}
}

// lz4TestData is n bytes that compress some: text-like runs and noise.
func lz4TestData(n int, seed int64) []byte {
	r := rand.New(rand.NewSource(seed))
	b := make([]byte, 0, n)
	for len(b) < n {
		if r.Intn(3) == 0 {
			chunk := make([]byte, 1+r.Intn(300))
			r.Read(chunk)
			b = append(b, chunk...)
		} else {
			b = append(b, fmt.Sprintf("line %d of the root file system: %s\n", r.Intn(1e6), "config value path")...)
		}
	}
	return b[:n]
}

// lz4Blocks compresses with pierrec/lz4 as independent blocks of size
// bytes (64 KiB, 256 KiB, 1 MiB or 4 MiB), with both checksums.
func lz4Blocks(t testing.TB, data []byte, size int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := lz4.NewWriter(&buf)
	if err := w.Apply(lz4.BlockSizeOption(lz4.BlockSize(size)), lz4.ChecksumOption(true), lz4.BlockChecksumOption(true),
		lz4.ConcurrencyOption(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// lz4CLI compresses with the lz4 tool and the given flags.
func lz4CLI(t testing.TB, data []byte, flags ...string) []byte {
	t.Helper()
	tool := testutil.Tool(t, "lz4")
	cmd := exec.Command(tool, append(flags, "-c")...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("lz4 %v: %v", flags, err)
	}
	return out
}

// decodeFrom decodes comp (of codec) from a restart point (in, out,
// state; 0, 0, nil: its start, sniffed) and returns the output, the
// restart points handed out and the decoded source.
func decodeFrom(t testing.TB, codec Codec, comp []byte, in, out int64, state []byte) ([]byte, []restartPoint, *decoded, error) {
	t.Helper()
	if in == 0 {
		codec = ""
	}
	d, err := openSourceAt(context.Background(), bytes.NewReader(comp[in:]), codec, in, out, state, 2, nil, false)
	if err != nil {
		return nil, nil, nil, err
	}
	defer d.src.close()
	var got []byte
	var points []restartPoint
	for {
		pc, err := d.src.next()
		if errors.Is(err, io.EOF) {
			return got, points, d, nil
		}
		if err != nil {
			return got, points, d, err
		}
		got = append(got, pc.p...)
		if pc.restart != nil {
			points = append(points, *pc.restart)
		}
		pc.done()
	}
}

// decodeLZ4 is decodeFrom for LZ4.
func decodeLZ4(t testing.TB, comp []byte, in, out int64, state []byte) ([]byte, []restartPoint, *decoded, error) {
	t.Helper()
	return decodeFrom(t, CodecLZ4, comp, in, out, state)
}

// TestLZ4Restart: streams of independent blocks restart at every block
// boundary with a fresh source and the restart point's state, and yield
// the rest exactly; linked blocks restart only at a frame's end.
func TestLZ4Restart(t *testing.T) {
	t.Parallel()
	data := lz4TestData(1<<20+54321, 2)
	type stream struct {
		name  string
		comp  []byte
		indep bool
	}
	streams := []stream{
		{"pierrec 64 KiB blocks, both checksums", lz4Blocks(t, data, 64<<10), true},
		{"pierrec 256 KiB blocks", lz4Blocks(t, data, 256<<10), true},
	}
	if _, err := exec.LookPath("lz4"); err == nil || os.Getenv("CI") != "" {
		streams = append(streams,
			stream{"lz4 -9 (Bottlerocket's)", lz4CLI(t, data, "-9", "-B4"), true},
			stream{"lz4 -1 block checksums", lz4CLI(t, data, "-1", "-B4", "-BX"), true},
			stream{"lz4 content size, no frame checksum", lz4CLI(t, data, "-B4", "--content-size", "--no-frame-crc"), true},
			stream{"lz4 linked blocks", lz4CLI(t, data, "-B4D"), false})
	}
	for _, s := range streams {
		got, points, d, err := decodeLZ4(t, s.comp, 0, 0, nil)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: %v (%d of %d bytes)", s.name, err, len(got), len(data))
		}
		if d.codec != CodecLZ4 || d.restartable != s.indep {
			t.Fatalf("%s: codec %s, restartable %v", s.name, d.codec, d.restartable)
		}
		last := points[len(points)-1]
		if last.In != int64(len(s.comp)) || last.Out != int64(len(data)) || last.codec != nil {
			t.Fatalf("%s: the last restart point is %+v, not the end", s.name, last)
		}
		if !s.indep {
			if len(points) != 1 {
				t.Fatalf("%s: %d restart points inside linked blocks", s.name, len(points))
			}
			continue
		}
		if len(points) < 5 {
			t.Fatalf("%s: only %d restart points", s.name, len(points))
		}
		for _, rp := range points[:len(points)-1] {
			if rp.codec == nil {
				t.Fatalf("%s: a restart point inside the frame without its state: %+v", s.name, rp)
			}
			// The state a checkpoint keeps goes through JSON.
			j, err := json.Marshal(rp.codec)
			if err != nil {
				t.Fatal(err)
			}
			var state []byte
			if err := json.Unmarshal(j, &state); err != nil {
				t.Fatal(err)
			}
			rest, _, _, err := decodeLZ4(t, s.comp, rp.In, rp.Out, state)
			if err != nil || !bytes.Equal(rest, data[rp.Out:]) {
				t.Fatalf("%s: restarting at %d/%d: %v (%d bytes)", s.name, rp.In, rp.Out, err, len(rest))
			}
		}
	}
}

// TestLZ4Frames: concatenated frames with a skippable frame between
// them decode to the concatenated content; bytes after the last frame
// that start no frame are left over (the caller's trailing-data error).
func TestLZ4Frames(t *testing.T) {
	t.Parallel()
	a, b := lz4TestData(300000, 3), lz4TestData(200000, 4)
	skippable := []byte{0x53, 0x2a, 0x4d, 0x18, 5, 0, 0, 0, 'h', 'e', 'l', 'l', 'o'}
	comp := append(append(lz4Blocks(t, a, 64<<10), skippable...), lz4Blocks(t, b, 256<<10)...)
	got, points, d, err := decodeLZ4(t, comp, 0, 0, nil)
	if err != nil || !bytes.Equal(got, append(append([]byte(nil), a...), b...)) || d.leftover() != 0 {
		t.Fatalf("%v, %d bytes, %d left over", err, len(got), d.leftover())
	}
	// A restart at the boundary between the frames (no state) goes on
	// through the skippable frame.
	for _, rp := range points {
		if rp.Out == int64(len(a)) && rp.codec == nil {
			rest, _, _, err := decodeLZ4(t, comp, rp.In, rp.Out, nil)
			if err != nil || !bytes.Equal(rest, b) {
				t.Fatalf("restarting between frames: %v", err)
			}
		}
	}
	for _, tail := range [][]byte{[]byte("EVIL"), {1, 2}, []byte("some longer trailing garbage")} {
		evil := append(append([]byte(nil), comp...), tail...)
		_, _, d, err := decodeLZ4(t, evil, 0, 0, nil)
		if err != nil || d.leftover() == 0 {
			t.Fatalf("trailing %q: %v, %d left over", tail, err, d.leftover())
		}
	}
}

// Bottlerocket's own lz4 -9 frames (shared test data) decode to the bytes
// they were made from, and the one with 4 bytes appended leaves them over.
func TestLZ4Bottlerocket(t *testing.T) {
	t.Parallel()
	dir := testutil.Bottlerocket(t, "lz4")
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	raw := read("sample.raw")
	got, points, d, err := decodeLZ4(t, read("sample.raw.lz4"), 0, 0, nil)
	if err != nil || !bytes.Equal(got, raw) || !d.restartable || len(points) == 0 {
		t.Fatalf("%v, %d bytes, restartable %v", err, len(got), d.restartable)
	}
	sum := sha256.Sum256(got)
	if hex.EncodeToString(sum[:]) != "9e8d817993c3df2c3c1820dfaf1f947c98c153a5541b18e497bbd8812b1999c7" {
		t.Fatal("sample.raw's sha256 differs from expected.json's")
	}
	_, _, d, err = decodeLZ4(t, read("sample.raw.lz4.trailing-garbage"), 0, 0, nil)
	if err != nil || d.leftover() != 4 {
		t.Fatalf("trailing garbage: %v, %d left over", err, d.leftover())
	}
}

// TestHostileLZ4: each malformed frame is refused with ErrLZ4Frame,
// never decoded into wrong bytes.
func TestHostileLZ4(t *testing.T) {
	t.Parallel()
	data := lz4TestData(200000, 5)
	good := lz4Blocks(t, data, 64<<10) // magic, FLG, BD, HC at 6, first block size at 7
	flip := func(at int, x byte) []byte {
		b := append([]byte(nil), good...)
		b[at] ^= x
		return b
	}
	fixHC := func(b []byte) []byte { // a header edit with a valid header checksum
		b[6] = byte(xxh32Sum(b[4:6]) >> 8)
		return b
	}
	bigBlock := append([]byte(nil), good[:7]...)
	bigBlock = append(bigBlock, 0x01, 0x00, 0x01, 0x00) // 65537 bytes in a frame of 64 KiB blocks
	bigBlock = append(bigBlock, make([]byte, 65537)...)
	cases := map[string][]byte{
		"content checksum":       flip(len(good)-1, 0x01),
		"block checksum":         flip(7+4+int(uint32(good[7])|uint32(good[8])<<8|uint32(good[9])<<16)+1, 0x80),
		"block data":             flip(20, 0x55),
		"header checksum":        flip(6, 0xff),
		"version":                fixHC(flip(4, 0xc0)),
		"reserved FLG bit":       fixHC(flip(4, 0x02)),
		"dictionary":             fixHC(flip(4, 0x01)),
		"block size code 3":      fixHC(func() []byte { b := append([]byte(nil), good...); b[5] = 0x30; return b }()),
		"reserved BD bit":        fixHC(flip(5, 0x01)),
		"cut inside a block":     good[:100],
		"cut before the end":     good[:len(good)-6],
		"block over the maximum": bigBlock,
		"no end mark":            good[:len(good)-8],
	}
	for name, b := range cases {
		got, _, _, err := decodeLZ4(t, b, 0, 0, nil)
		if !errors.Is(err, ErrLZ4Frame) {
			t.Errorf("%s: %v", name, err)
		}
		if len(got) > len(data) || !bytes.Equal(got, data[:len(got)]) {
			t.Errorf("%s: handed out %d bytes that are not the content", name, len(got))
		}
	}
	// A content size that disagrees with the content.
	var buf bytes.Buffer
	w := lz4.NewWriter(&buf)
	if err := w.Apply(lz4.SizeOption(uint64(len(data) + 1))); err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Close()
	if _, _, _, err := decodeLZ4(t, buf.Bytes(), 0, 0, nil); !errors.Is(err, ErrLZ4Frame) {
		t.Errorf("a wrong content size: %v", err)
	}
	// Restart states that cannot be.
	_, points, _, err := decodeLZ4(t, good, 0, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := points[1].codec
	bad := map[string][]byte{
		"short":         st[:len(st)-1],
		"version":       append([]byte{2}, st[1:]...),
		"linked":        append([]byte{1, st[1] &^ 1}, st[2:]...),
		"block size":    append(append([]byte{1, st[1]}, 0, 0, 3, 0), st[6:]...),
		"past the size": append(append(append([]byte(nil), st[:6]...), 1, 0, 0, 0, 0, 0, 0, 0), st[14:]...),
		"hash buffer":   append(append([]byte(nil), st[:len(st)-1]...), 16),
	}
	for name, s := range bad {
		if _, err := unmarshalLZ4Frame(s); !errors.Is(err, ErrLZ4Frame) {
			t.Errorf("restart state %s: %v", name, err)
		}
	}
}

// TestResumeAfterInterruptionLZ4: an install of lz4 images (Bottlerocket's
// format) interrupted in the middle of the root goes on from its
// checkpoint inside the frame in a new process, re-reading at most the
// checkpoint interval, the read-ahead and one block.
func TestResumeAfterInterruptionLZ4(t *testing.T) {
	t.Parallel()
	f := newFixtureRoot(t, 32)
	f.codec = CodecLZ4
	f.frames = 256 << 10
	f.rootBytes = 24 << 20
	const every = 256 << 10
	in := f.interruptRoot(every, 0.6)
	cp, err := in.u.store.loadCheckpoint()
	if err != nil {
		t.Fatal(err)
	}
	ip := cp.Images[KindRoot]
	if ip.Codec != CodecLZ4 || ip.NoRestarts || ip.In == 0 || len(ip.CodecState) == 0 {
		t.Fatalf("the checkpoint of an lz4 root: codec %s, no restarts %v, at %d, state %d bytes", ip.Codec, ip.NoRestarts, ip.In, len(ip.CodecState))
	}
	st, err := in.u.Status(context.Background())
	done := ip.In + cp.Images[KindBoot].In + cp.Images[KindHash].In
	if err != nil || st.Install == nil || len(st.Install.RestartsFromZero) != 0 || st.Install.BytesDone != done {
		t.Fatalf("status of an interrupted lz4 install: %+v %v", st.Install, err)
	}
	in.finish(f, every)
	again := in.read - ip.In
	block := int64(len(lz4Blocks(t, in.r.root[:256<<10], 256<<10)))
	t.Logf("read %d of %d, checkpoint at %d: %d bytes read twice (bound %d + read-ahead %d + a block of %d)",
		in.read, in.rootLen, ip.In, again, every, readAhead, block)
	if again > every+readAhead+block || again < 0 {
		t.Fatalf("%d bytes read twice after the interruption", again)
	}
}

// A gzip install interrupted says in status that it starts over.
func TestStatusSaysGzipRestartsFromZero(t *testing.T) {
	t.Parallel()
	f := newFixtureRoot(t, 32)
	f.codec = CodecGzip
	f.rootBytes = 16 << 20
	in := f.interruptRoot(256<<10, 0.5)
	defer in.u.Unlock()
	st, err := in.u.Status(context.Background())
	if err != nil || st.Install == nil || len(st.Install.RestartsFromZero) != 1 || st.Install.RestartsFromZero[0] != KindRoot {
		t.Fatalf("status of an interrupted gzip install: %+v %v", st.Install, err)
	}
}
