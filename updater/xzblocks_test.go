package updater

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"os"
	"os/exec"
	"testing"

	"github.com/ulikunitz/xz"

	"github.com/updog/updog/internal/testutil"
)

// xzCLI compresses with the xz tool and the given flags.
func xzCLI(t testing.TB, data []byte, flags ...string) []byte {
	t.Helper()
	tool := testutil.Tool(t, "xz")
	cmd := exec.Command(tool, append(flags, "-c")...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz %v: %v", flags, err)
	}
	return out
}

// decodeXZ is decodeFrom for xz.
func decodeXZ(t testing.TB, comp []byte, in, out int64, state []byte) ([]byte, []restartPoint, *decoded, error) {
	t.Helper()
	return decodeFrom(t, CodecXZ, comp, in, out, state)
}

// TestXZRestart: multi-block streams (xz -T, every check type) restart at
// every block boundary with a fresh source and the restart point's state
// and yield the rest exactly; a single block without sizes (xz -T1, the
// Go encoder) decodes, without restart points inside.
func TestXZRestart(t *testing.T) {
	t.Parallel()
	data := lz4TestData(1<<20+4321, 6)
	type stream struct {
		name   string
		comp   []byte
		blocks bool
	}
	var gw bytes.Buffer
	w, err := xz.NewWriter(&gw)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Close()
	streams := []stream{{"Go encoder", gw.Bytes(), false}}
	if _, err := exec.LookPath("xz"); err == nil || os.Getenv("CI") != "" {
		streams = append(streams,
			stream{"xz -T2 crc64", xzCLI(t, data, "-3", "-T2", "--block-size=131072"), true},
			stream{"xz -T2 crc32", xzCLI(t, data, "-1", "-T2", "--block-size=200000", "--check=crc32"), true},
			stream{"xz -T2 sha256", xzCLI(t, data, "-6", "-T2", "--block-size=300000", "--check=sha256"), true},
			stream{"xz -T2 no check", xzCLI(t, data, "-0", "-T2", "--block-size=100000", "--check=none"), true},
			stream{"xz -T1 (one block, no sizes)", xzCLI(t, data, "-3", "-T1"), false})
	}
	for _, s := range streams {
		got, points, d, err := decodeXZ(t, s.comp, 0, 0, nil)
		if err != nil || !bytes.Equal(got, data) || d.leftover() != 0 {
			t.Fatalf("%s: %v (%d of %d bytes, %d left over)", s.name, err, len(got), len(data), d.leftover())
		}
		if d.codec != CodecXZ || d.restartable != s.blocks {
			t.Fatalf("%s: codec %s, restartable %v", s.name, d.codec, d.restartable)
		}
		if !s.blocks {
			if len(points) != 0 {
				t.Fatalf("%s: %d restart points in a stream read through a buffer", s.name, len(points))
			}
			continue
		}
		last := points[len(points)-1]
		if len(points) < 5 || last.In != int64(len(s.comp)) || last.Out != int64(len(data)) || last.codec != nil {
			t.Fatalf("%s: %d restart points, the last %+v", s.name, len(points), last)
		}
		for _, rp := range points {
			j, _ := json.Marshal(rp.codec)
			var state []byte
			json.Unmarshal(j, &state)
			rest, _, d, err := decodeXZ(t, s.comp, rp.In, rp.Out, state)
			if err != nil || !bytes.Equal(rest, data[rp.Out:]) || d.leftover() != 0 {
				t.Fatalf("%s: restarting at %d/%d: %v (%d bytes)", s.name, rp.In, rp.Out, err, len(rest))
			}
		}
	}
}

// TestHostileXZ: malformed streams are refused with ErrXZStream (or, for
// a dictionary beyond the limit, ErrImageTooLarge), never decoded into
// wrong bytes unnoticed.
func TestHostileXZ(t *testing.T) {
	t.Parallel()
	data := lz4TestData(300000, 7)
	good := xzCLI(t, data, "-3", "-T2", "--block-size=65536")
	// The first block header starts at 12: its size byte, flags, sizes,
	// the filter (0x21, 1, dictionary code), padding, CRC32.
	hlen := (int(good[12]) + 1) * 4
	fixHeaderCRC := func(b []byte) []byte {
		binary.LittleEndian.PutUint32(b[12+hlen-4:], crc32.ChecksumIEEE(b[12:12+hlen-4]))
		return b
	}
	filterAt := bytes.Index(good[12:12+hlen], []byte{0x21, 0x01}) + 12
	edit := func(f func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		f(b)
		return b
	}
	_, points, _, err := decodeXZ(t, good, 0, 0, nil)
	if err != nil || len(points) < 4 {
		t.Fatal(err, len(points))
	}
	block2 := points[0].In // where the second block's header starts
	cases := map[string]struct {
		b    []byte
		want error
	}{
		"stream flags":        {edit(func(b []byte) { b[7] = 5 }), ErrXZStream},
		"block header CRC32":  {edit(func(b []byte) { b[13] ^= 0x01 }), ErrXZStream},
		"reserved block flag": {fixHeaderCRC(edit(func(b []byte) { b[13] |= 0x04 })), ErrXZStream},
		"BCJ filter":          {fixHeaderCRC(edit(func(b []byte) { b[filterAt] = 0x04 })), ErrXZStream},
		"huge dictionary":     {fixHeaderCRC(edit(func(b []byte) { b[filterAt+2] = 38 })), ErrImageTooLarge},
		"block data":          {edit(func(b []byte) { b[12+hlen+100] ^= 0x55 }), ErrXZStream},
		"block check":         {edit(func(b []byte) { b[block2-1] ^= 0x01 }), ErrXZStream},
		"index":               {edit(func(b []byte) { b[len(b)-14] ^= 0x01 }), ErrXZStream},
		"footer":              {edit(func(b []byte) { b[len(b)-3] ^= 0x01 }), ErrXZStream},
		"cut":                 {good[:len(good)/2], ErrXZStream},
		"cut before footer":   {good[:len(good)-12], ErrXZStream},
	}
	for name, c := range cases {
		got, _, _, err := decodeXZ(t, c.b, 0, 0, nil)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v", name, err)
		}
		if len(got) > len(data) || !bytes.Equal(got, data[:len(got)]) {
			// A bad block's bytes may go out before its check fails
			// (the verity check and the hashes stop them), but never
			// bytes of a block whose header was refused.
			if name != "block data" {
				t.Errorf("%s: handed out %d bytes that are not the content", name, len(got))
			}
		}
	}
	// Trailing bytes after the stream, even stream padding, are left over.
	for _, tail := range [][]byte{[]byte("EVIL"), make([]byte, 4), good} {
		_, _, d, err := decodeXZ(t, append(append([]byte(nil), good...), tail...), 0, 0, nil)
		if err != nil || d.leftover() == 0 {
			t.Errorf("trailing %d bytes: %v, %d left over", len(tail), err, d.leftover())
		}
	}
	// Restart states that cannot be.
	st := points[1].codec
	for name, s := range map[string][]byte{
		"short":   st[:20],
		"version": append([]byte{2}, st[1:]...),
		"check":   append([]byte{1, 0, 3}, st[3:]...),
		"hash":    st[:len(st)-1],
	} {
		if _, err := unmarshalXZStream(s); !errors.Is(err, ErrXZStream) {
			t.Errorf("restart state %s: %v", name, err)
		}
	}
	// A restart state from another stream: the index check refuses it.
	other := xzCLI(t, lz4TestData(300000, 8), "-3", "-T2", "--block-size=65536")
	_, op, _, err := decodeXZ(t, other, 0, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := decodeXZ(t, good, points[1].In, points[1].Out, op[1].codec); !errors.Is(err, ErrXZStream) {
		t.Errorf("another stream's restart state: %v", err)
	}
}

// TestResumeAfterInterruptionXZ: an install of xz -T images interrupted
// in the middle of the root goes on from its checkpoint at a block
// boundary in a new process.
func TestResumeAfterInterruptionXZ(t *testing.T) {
	t.Parallel()
	testutil.Tool(t, "xz")
	f := newFixtureRoot(t, 32)
	f.codec = CodecXZ
	f.frames = 512 << 10
	f.rootBytes = 16 << 20
	const every = 256 << 10
	in := f.interruptRoot(every, 0.6)
	cp, err := in.u.store.loadCheckpoint()
	if err != nil {
		t.Fatal(err)
	}
	ip := cp.Images[KindRoot]
	if ip.Codec != CodecXZ || ip.NoRestarts || ip.In == 0 || len(ip.CodecState) == 0 {
		t.Fatalf("the checkpoint of an xz root: codec %s, no restarts %v, at %d, state %d bytes", ip.Codec, ip.NoRestarts, ip.In, len(ip.CodecState))
	}
	in.finish(f, every)
	again := in.read - ip.In
	block := int64(len(xzCLI(t, in.r.root[:512<<10], "-3", "-T2", "--block-size=524288")))
	t.Logf("read %d of %d, checkpoint at %d: %d bytes read twice (bound %d + read-ahead %d + a block of %d)",
		in.read, in.rootLen, ip.In, again, every, readAhead, block)
	if again > every+readAhead+block || again < 0 {
		t.Fatalf("%d bytes read twice after the interruption", again)
	}
}
