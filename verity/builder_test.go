package verity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"testing"
)

type memWriterAt struct{ b []byte }

func (m *memWriterAt) WriteAt(p []byte, off int64) (int, error) {
	if need := int(off) + len(p); need > len(m.b) {
		m.b = append(m.b, make([]byte, need-len(m.b))...)
	}
	return copy(m.b[off:], p), nil
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 3))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestStreamingEqualsFormat writes data to a Builder in uneven pieces, as
// an updater receiving a download would, and gets the same tree as Format.
func TestStreamingEqualsFormat(t *testing.T) {
	data := randomBytes(5<<20+4096*3+100, 1)
	p := DefaultParams()
	p.Salt, p.UUID = []byte("salt"), testUUID
	want := &memWriterAt{}
	wt, err := Format(context.Background(), bytes.NewReader(data), int64(len(data)), want, p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewBuilder(p)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(2, 2))
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1+r.IntN(300000))
		if _, err := b.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	tr, err := b.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tr.RootHash, wt.RootHash) || tr.Uncovered != 100 {
		t.Fatalf("root %x uncovered %d; want %x, 100", tr.RootHash, tr.Uncovered, wt.RootHash)
	}
	got := &memWriterAt{}
	tr.WriteTo(got)
	if !bytes.Equal(got.b, want.b) {
		t.Fatal("streamed tree bytes differ from Format's")
	}
	// The updater's check: the tree of what streamed past against the hash
	// image it wrote, then the root against the signed one.
	if err := tr.Check(context.Background(), bytes.NewReader(want.b)); err != nil {
		t.Fatal(err)
	}
	if err := tr.CheckRoot(wt.RootHash); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write([]byte{1}); !errors.Is(err, ErrClosed) {
		t.Errorf("write after close: %v", err)
	}
	if _, err := b.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("close twice: %v", err)
	}
}

func TestSingleBlockRoot(t *testing.T) {
	data := randomBytes(4096, 9)
	p := DefaultParams()
	p.Salt = []byte{0xaa}
	tr, err := Build(context.Background(), bytes.NewReader(data), 4096, p)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(append([]byte{0xaa}, data...))
	if !bytes.Equal(tr.RootHash, want[:]) || tr.HashBlocks != 0 {
		t.Fatalf("root %x (%d hash blocks), want %x", tr.RootHash, tr.HashBlocks, want)
	}
}

func TestParamsRefused(t *testing.T) {
	for name, edit := range map[string]func(*Params){
		"md5":               func(p *Params) { p.Hash = "md5" },
		"block 1000":        func(p *Params) { p.DataBlockSize = 1000 },
		"block 8192":        func(p *Params) { p.HashBlockSize = 8192 },
		"salt 257":          func(p *Params) { p.Salt = make([]byte, 257) },
		"offset 1000":       func(p *Params) { p.HashOffset = 1000 },
		"no-sb offset 1024": func(p *Params) { p.NoSuperblock, p.HashOffset = true, 1024 },
	} {
		p := DefaultParams()
		edit(&p)
		if _, err := NewBuilder(p); !errors.Is(err, ErrParams) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := Build(context.Background(), bytes.NewReader(make([]byte, 100)), 100, DefaultParams()); !errors.Is(err, ErrParams) {
		t.Errorf("less than a block of data: %v", err)
	}
}

func TestHashDeviceTooShort(t *testing.T) {
	data := randomBytes(1<<20, 4)
	p := DefaultParams()
	h := &memWriterAt{}
	tr, _ := Format(context.Background(), bytes.NewReader(data), int64(len(data)), h, p)
	err := tr.Check(context.Background(), bytes.NewReader(h.b[:len(h.b)-4096]))
	if err == nil || errors.Is(err, ErrCorrupt) {
		t.Fatalf("truncated hash device: %v", err)
	}
}

func TestTableLine(t *testing.T) {
	i := Info{Params: Params{Hash: "sha256", DataBlockSize: 4096, HashBlockSize: 4096, DataBlocks: 256}, RootHash: []byte{0xab, 0xcd}, HashStart: 1}
	if got, want := i.Table("/dev/a", "/dev/b"), "0 2048 verity 1 /dev/a /dev/b 4096 4096 256 1 sha256 abcd -"; got != want {
		t.Errorf("table\n got %s\nwant %s", got, want)
	}
}
