package verity

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
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
