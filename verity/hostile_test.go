package verity

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// TestHostileParamsOverflow: numbers whose products overflow an int64 are
// refused as invalid parameters, instead of wrapping into a tree over the
// wrong number of blocks or a negative hash device size.
func TestHostileParamsOverflow(t *testing.T) {
	data := randomBytes(1<<20, 11)
	for name, edit := range map[string]func(*Params){
		"data blocks wrap to one block": func(p *Params) { p.DataBlocks = 1<<52 + 1 },
		"data blocks max":               func(p *Params) { p.DataBlocks = math.MaxUint64 },
		"data blocks just past int64":   func(p *Params) { p.DataBlocks = math.MaxInt64/4096 + 1 },
		"hash offset at the int64 end":  func(p *Params) { p.HashOffset = math.MaxInt64 &^ 511 },
		"no superblock, offset at end":  func(p *Params) { p.NoSuperblock, p.HashOffset = true, math.MaxInt64&^4095 },
	} {
		p := DefaultParams()
		edit(&p)
		tr, err := Build(context.Background(), bytes.NewReader(data), int64(len(data)), p)
		if !errors.Is(err, ErrParams) {
			if tr != nil {
				t.Errorf("%s: built a tree of %d data blocks, hash device size %d (err %v)", name, tr.DataBlocks, tr.HashDeviceSize, err)
			} else {
				t.Errorf("%s: %v, want ErrParams", name, err)
			}
		}
	}
}

// TestSpareMismatchNamesChangedByte: a non-zero byte in the zero tail of a
// hash block, or in the zero padding of an entry, is named by its own
// position; Offset stays the area's start, the position veritysetup prints.
func TestSpareMismatchNamesChangedByte(t *testing.T) {
	for _, c := range []struct {
		name        string
		p           Params
		area, byte_ int64
	}{
		// 10 sha256 entries in level 0 (block 1): the tail from 4096+320.
		{"block tail", Params{Hash: "sha256", DataBlockSize: 4096, HashBlockSize: 4096}, 4096 + 320, 4096 + 320 + 1000},
		// sha1 entries are 20 bytes in a 32-byte stride: entry 3's padding.
		{"entry padding", Params{Hash: "sha1", DataBlockSize: 4096, HashBlockSize: 4096}, 4096 + 3*32 + 20, 4096 + 3*32 + 20 + 7},
	} {
		data := randomBytes(10*4096, 12)
		h := &memWriterAt{}
		tr, err := Format(context.Background(), bytes.NewReader(data), int64(len(data)), h, c.p)
		if err != nil {
			t.Fatal(err)
		}
		h.b[c.byte_] = 0x5a
		err = tr.Check(context.Background(), bytes.NewReader(h.b))
		var me *MismatchError
		if !errors.As(err, &me) || !me.Spare {
			t.Fatalf("%s: %v, want a spare-area MismatchError", c.name, err)
		}
		if me.Offset != c.area || me.Byte != c.byte_ {
			t.Errorf("%s: Offset %d, Byte %d; want the area's start %d and the byte %d", c.name, me.Offset, me.Byte, c.area, c.byte_)
		}
		if msg := me.Error(); !strings.Contains(msg, strconv.FormatInt(c.byte_, 10)) {
			t.Errorf("%s: %q does not name the changed byte %d", c.name, msg, c.byte_)
		}
	}
}

// cancellingReader cancels its context on the read after the first after
// reads, and counts the reads made after that.
type cancellingReader struct {
	r      *bytes.Reader
	after  int
	reads  atomic.Int64
	late   atomic.Int64
	cancel context.CancelFunc
}

func (c *cancellingReader) ReadAt(p []byte, off int64) (int, error) {
	n := c.reads.Add(1)
	if n > int64(c.after)+1 {
		c.late.Add(1)
	}
	if n == int64(c.after)+1 {
		c.cancel()
	}
	return c.r.ReadAt(p, off)
}

// TestHostileBuildCancelled cancels the context while Build and Verify read
// the data: they stop at the next read with context.Canceled instead of
// hashing the rest.
func TestHostileBuildCancelled(t *testing.T) {
	data := randomBytes(16<<20, 13)
	p := DefaultParams()
	h := &memWriterAt{}
	tr, err := Format(context.Background(), bytes.NewReader(data), int64(len(data)), h, p)
	if err != nil {
		t.Fatal(err)
	}
	for name, run := range map[string]func(context.Context, io.ReaderAt) error{
		"build": func(ctx context.Context, r io.ReaderAt) error {
			_, err := Build(ctx, r, int64(len(data)), p)
			return err
		},
		"format": func(ctx context.Context, r io.ReaderAt) error {
			out := &memWriterAt{}
			_, err := Format(ctx, r, int64(len(data)), out, p)
			if len(out.b) != 0 {
				t.Errorf("format: %d bytes written to the hash device after a cancel", len(out.b))
			}
			return err
		},
		"verify": func(ctx context.Context, r io.ReaderAt) error {
			return Verify(ctx, r, int64(len(data)), bytes.NewReader(h.b), p, tr.RootHash)
		},
		"verify stream": func(ctx context.Context, r io.ReaderAt) error {
			return VerifyStream(ctx, r, int64(len(data)), bytes.NewReader(h.b), p, tr.RootHash)
		},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		r := &cancellingReader{r: bytes.NewReader(data), after: 3, cancel: cancel}
		err := run(ctx, r)
		cancel()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: %v, want context.Canceled", name, err)
		}
		if late := r.late.Load(); late != 0 {
			t.Errorf("%s: %d reads of the data after the cancel", name, late)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tr.Check(ctx, bytes.NewReader(h.b)); !errors.Is(err, context.Canceled) {
		t.Errorf("check with a cancelled context: %v", err)
	}
}

// countingReaderAt counts the reads and bytes read of a device.
type countingReaderAt struct {
	r     io.ReaderAt
	reads atomic.Int64
	bytes atomic.Int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.reads.Add(1)
	n, err := c.r.ReadAt(p, off)
	c.bytes.Add(int64(n))
	return n, err
}

// cancellingStream cancels its context during its read number at+1 and
// counts the reads after that one.
type cancellingStream struct {
	r      io.Reader
	at     int
	reads  int
	late   int
	cancel context.CancelFunc
}

func (c *cancellingStream) Read(p []byte) (int, error) {
	c.reads++
	if c.reads == c.at+1 {
		c.cancel()
	}
	if c.reads > c.at+1 {
		c.late++
	}
	return c.r.Read(p)
}

// TestHostileCheckerCancelled: a cancelled context stops a Checker where it
// is: before NewChecker reads the tree, between two Writes, and between two
// reads of ReadFrom (no read after the one during which it was cancelled);
// Close then says so too.
func TestHostileCheckerCancelled(t *testing.T) {
	cc := caseNamed(t, "sha256 4096/4096 salt, 3 MiB and 5 blocks")
	d := makeDevice(t, cc, 21)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dev := &countingReaderAt{r: bytes.NewReader(d.hash)}
	if _, err := NewChecker(ctx, dev, d.p, d.tree.RootHash); !errors.Is(err, context.Canceled) {
		t.Errorf("NewChecker with a cancelled context: %v", err)
	}
	if n := dev.reads.Load(); n != 0 {
		t.Errorf("NewChecker with a cancelled context read the hash device %d times", n)
	}

	ctx, cancel = context.WithCancel(context.Background())
	c, err := NewChecker(ctx, bytes.NewReader(d.hash), d.p, d.tree.RootHash)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(d.data[:1<<20]); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := c.Write(d.data[1<<20 : 2<<20]); !errors.Is(err, context.Canceled) {
		t.Errorf("Write after the cancel: %v", err)
	}
	if err := c.Close(); !errors.Is(err, context.Canceled) {
		t.Errorf("Close after the cancel: %v", err)
	}

	// Cancelled after the last whole batch: Close, which checks the rest,
	// still stops.
	ctx, cancel = context.WithCancel(context.Background())
	if c, err = NewChecker(ctx, bytes.NewReader(d.hash), d.p, d.tree.RootHash); err != nil {
		t.Fatal(err)
	}
	c.Write(d.data) // the last 5 blocks wait in the Checker for Close
	cancel()
	if err := c.Close(); !errors.Is(err, context.Canceled) {
		t.Errorf("Close after the cancel: %v", err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	if c, err = NewChecker(ctx, bytes.NewReader(d.hash), d.p, d.tree.RootHash); err != nil {
		t.Fatal(err)
	}
	src := &cancellingStream{r: bytes.NewReader(d.data), at: 1, cancel: cancel}
	if _, err := c.ReadFrom(src); !errors.Is(err, context.Canceled) {
		t.Errorf("ReadFrom cancelled: %v", err)
	}
	if src.late != 0 {
		t.Errorf("ReadFrom read %d times after the cancel", src.late)
	}
	if err := c.Close(); !errors.Is(err, context.Canceled) {
		t.Errorf("Close after ReadFrom was cancelled: %v", err)
	}
}

// swappingReaderAt serves one hash device until swap, then another: a
// device changed, or lying, after NewChecker has checked its tree.
type swappingReaderAt struct {
	before, after []byte
	swapped       atomic.Bool
}

func (s *swappingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if s.swapped.Load() {
		return bytes.NewReader(s.after).ReadAt(p, off)
	}
	return bytes.NewReader(s.before).ReadAt(p, off)
}

// TestHostileCheckerHashDeviceChanges: the hash device is changed after
// NewChecker checked it, to describe changed data (a level-0 entry alone,
// or a whole consistent tree of the changed data). The level-0 blocks read
// as the data streams are checked against the levels above up to the root,
// so the changed data is still refused.
func TestHostileCheckerHashDeviceChanges(t *testing.T) {
	for _, name := range []string{"sha256 4096/4096 salt, 3 MiB and 5 blocks", "sha512 4096/512 long salt, 3 MiB and 5 blocks"} {
		cc := caseNamed(t, name)
		d := makeDevice(t, cc, 22)
		bad := bytes.Clone(d.data)
		badBlock := uint64(300)
		bad[badBlock*uint64(cc.p.DataBlockSize)+7] ^= 1
		badTree := makeDevice(t, cc, 0)
		h := &memWriterAt{}
		if _, err := Format(context.Background(), bytes.NewReader(bad), cc.size, h, cc.p); err != nil {
			t.Fatal(err)
		}
		badTree.hash = h.b
		// Only the level-0 entry of the changed block, in the good tree.
		entryOnly := bytes.Clone(d.hash)
		g := d.tree.g
		e := int64(g.levelStart[0])*int64(cc.p.HashBlockSize) + int64(badBlock)*int64(g.stride)
		copy(entryOnly[e:e+int64(g.digestSize)], badTree.hash[e:])

		for name, after := range map[string][]byte{"level-0 entry": entryOnly, "whole tree": badTree.hash} {
			dev := &swappingReaderAt{before: d.hash, after: after}
			c, err := NewChecker(context.Background(), dev, d.p, d.tree.RootHash)
			if err != nil {
				t.Fatal(err)
			}
			dev.swapped.Store(true)
			_, werr := c.ReadFrom(bytes.NewReader(bad))
			err = c.Close()
			var me *MismatchError
			if !errors.As(err, &me) || me.Device != "hash" || !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s, %s changed after NewChecker: ReadFrom %v, Close %v; want a hash block refused", cc.name, name, werr, err)
			}
		}
	}
}

// TestHostileCheckerShortHashDevice: a hash device that ends inside the
// tree, or holds a few bytes, is an error (not a mismatch, not a panic),
// found before any data is read.
func TestHostileCheckerShortHashDevice(t *testing.T) {
	cc := caseNamed(t, "sha256 4096/4096 salt, 3 MiB and 5 blocks")
	d := makeDevice(t, cc, 23)
	for _, n := range []int{len(d.hash) - 1, len(d.hash) - 4096, 4096 + 100, 12, 0} {
		_, err := NewChecker(context.Background(), bytes.NewReader(d.hash[:n]), d.p, d.tree.RootHash)
		if err == nil || errors.Is(err, ErrCorrupt) {
			t.Errorf("hash device of %d of %d bytes: %v, want a read error", n, len(d.hash), err)
		}
		data := &countingReaderAt{r: bytes.NewReader(d.data)}
		err = VerifyStream(context.Background(), data, cc.size, bytes.NewReader(d.hash[:n]), cc.p, d.tree.RootHash)
		if err == nil || errors.Is(err, ErrCorrupt) {
			t.Errorf("VerifyStream, hash device of %d of %d bytes: %v, want a read error", n, len(d.hash), err)
		}
		if data.bytes.Load() != 0 {
			t.Errorf("VerifyStream, hash device of %d of %d bytes: read %d bytes of data", n, len(d.hash), data.bytes.Load())
		}
	}
}

// zeroDevice is an endless device of zeros: a hash device that lies about
// its size.
type zeroDevice struct{}

func (zeroDevice) ReadAt(p []byte, _ int64) (int, error) {
	clear(p)
	return len(p), nil
}

// TestHostileCheckerHugeClaims: a superblock claiming 2^40 data blocks (4
// PiB) over a hash device of 1 MiB, or over an endless device of zeros:
// NewChecker refuses at its first read or first block, having read and
// allocated next to nothing.
func TestHostileCheckerHugeClaims(t *testing.T) {
	p := DefaultParams()
	p.DataBlocks = 1 << 40
	for name, dev := range map[string]io.ReaderAt{"1 MiB": bytes.NewReader(make([]byte, 1<<20)), "endless zeros": zeroDevice{}} {
		cdev := &countingReaderAt{r: dev}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := NewChecker(context.Background(), cdev, p, make([]byte, 32))
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Fatalf("%s: accepted", name)
		}
		if n := cdev.bytes.Load(); n > 1<<20 {
			t.Errorf("%s: read %d bytes before refusing", name, n)
		}
		if a := after.TotalAlloc - before.TotalAlloc; a > 4<<20 {
			t.Errorf("%s: allocated %d bytes before refusing", name, a)
		}
	}
}

// TestHostileVerifyBadParams: parameters that are not valid (a zero block
// size, a negative size) are ErrParams from both verifications, not a
// division by zero.
func TestHostileVerifyBadParams(t *testing.T) {
	data := bytes.NewReader(make([]byte, 8192))
	for name, verify := range map[string]func(context.Context, io.ReaderAt, int64, io.ReaderAt, Params, []byte) error{
		"Verify": Verify, "VerifyStream": VerifyStream,
	} {
		if err := verify(context.Background(), data, 8192, data, Params{}, nil); !errors.Is(err, ErrParams) {
			t.Errorf("%s, zero Params: %v", name, err)
		}
		if err := verify(context.Background(), data, -4096, data, DefaultParams(), nil); !errors.Is(err, ErrParams) {
			t.Errorf("%s, negative size: %v", name, err)
		}
	}
}
