package delta

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// Defaults and limits of the format.
const (
	// BlockSize is the block size updog writes: dm-verity's data block.
	BlockSize = 4096
	// DefaultFrameSize is the output of one frame of the seekable file.
	DefaultFrameSize = 64 << 10
	// IDSize is the size of a frame id (a sha256).
	IDSize = sha256.Size
	// MinBlockSize and MaxBlockSize bound the block size an index may
	// give (powers of two).
	MinBlockSize = 512
	MaxBlockSize = 64 << 10
	// MaxFrameSize bounds a frame's output: a decoded frame is held in
	// memory.
	MaxFrameSize = 4 << 20
	// MaxImageSize bounds the image an index describes (1 TiB, the
	// manifest's bound).
	MaxImageSize = 1 << 40
	// MaxSaltSize is dm-verity's bound on the salt.
	MaxSaltSize = 256
	// MaxNameSize bounds the seekable file's name.
	MaxNameSize = 255
	// HashSHA256 is the only hash the format uses.
	HashSHA256 = "sha256"
	// MaxAppendixBytes bounds the appendix of mixed frames (its encoded
	// bytes): it is downloaded with the index and held in memory by the
	// host for the whole install.
	MaxAppendixBytes = 8 << 20
)

// Sentinel errors.
var (
	// ErrIndex means an index is malformed or inconsistent; the error says
	// which field.
	ErrIndex = errors.New("delta: bad index")
	// ErrMismatch means a frame's content is not the one its id names.
	ErrMismatch = errors.New("delta: frame does not match its id")
)

// magic starts every index file; the version follows it.
var magic = [8]byte{'U', 'P', 'D', 'O', 'G', 'D', 'I', 'X'}

// The layouts Marshal writes and Parse reads: version 1 has no appendix,
// version 2 has one (Marshal writes 1 when there is no appendix, so an
// index without one is the same bytes as before the appendix existed).
const (
	formatVersion         = 1
	formatVersionAppendix = 2
)

// File names a file and pins its content.
type File struct {
	Name   string
	Length int64
	SHA256 [32]byte
}

// HashImage describes the dm-verity hash image of the root, so a host can
// make it again from the root it wrote instead of downloading it: the
// superblock's UUID (the rest of the superblock comes from the index and
// the manifest), the hash block size, and the image's length and sha256.
type HashImage struct {
	UUID          [16]byte
	HashBlockSize int
	Length        int64
	SHA256        [32]byte
}

// Frame is one frame of the seekable file.
type Frame struct {
	// ID is the sha256 of the digests of the frame's blocks.
	ID [IDSize]byte
	// CLen is the frame's compressed length in the seekable file.
	CLen uint32
}

// Mixed is an entry of the index's appendix: a frame that holds both file
// data and other blocks (file-system metadata: inodes, directories,
// superblock; and zeros). When a file changes size, the file data of such
// a frame is found again, moved, in the host's images, but its metadata
// blocks are new: the appendix carries them, so the host can assemble the
// frame from single blocks of its seeds and these blocks instead of
// fetching it.
type Mixed struct {
	// Frame is the frame's number.
	Frame int
	// Digests are the digests of the frame's blocks, in order (IDSize
	// bytes each): their sha256 is the frame's id, which is how they are
	// checked.
	Digests []byte
	// Blocks are the positions in the frame (in blocks, increasing) of the
	// blocks Blob holds: all but the file data, which the host finds in
	// its seeds. At least one block of the frame is not in Blob.
	Blocks []uint16
	// Blob is those blocks, in order, as one zstd frame.
	Blob []byte
}

// EncodedSize is what m takes in the index.
func (m *Mixed) EncodedSize() int {
	return 4 + 2 + 2*len(m.Blocks) + len(m.Digests) + 4 + len(m.Blob)
}

// Index describes a seekable root image. Frame i is the image's bytes
// [i*FrameSize, min((i+1)*FrameSize, ImageSize)), stored compressed at
// Offsets()[i] in the seekable file.
type Index struct {
	BlockSize int
	FrameSize int
	Hash      string
	Salt      []byte
	ImageSize int64
	Seekable  File
	// Verity, when set, describes the root's hash image.
	Verity *HashImage
	Frames []Frame
	// Mixed is the appendix (optional): mixed frames, by increasing
	// frame number.
	Mixed []Mixed
}

// AppendixSize is the bytes the appendix takes in the index (0 without
// one).
func (x *Index) AppendixSize() int {
	if len(x.Mixed) == 0 {
		return 0
	}
	n := 4
	for i := range x.Mixed {
		n += x.Mixed[i].EncodedSize()
	}
	return n
}

// FindMixed returns the appendix entry of frame i, or nil.
func (x *Index) FindMixed(i int) *Mixed {
	j, ok := slices.BinarySearchFunc(x.Mixed, i, func(m Mixed, i int) int { return m.Frame - i })
	if !ok {
		return nil
	}
	return &x.Mixed[j]
}

// FrameCount is the number of frames of an image of size bytes.
func FrameCount(size int64, frameSize int) int64 {
	return (size + int64(frameSize) - 1) / int64(frameSize)
}

// MaxCompressedFrame bounds one compressed frame of frameSize bytes of
// output (zstd's worst-case expansion, with room for the frame header).
func MaxCompressedFrame(frameSize int) int64 {
	return int64(frameSize) + int64(frameSize)/128 + 4096
}

// FrameRange is the image bytes frame i covers.
func (x *Index) FrameRange(i int) (off, n int64) {
	off = int64(i) * int64(x.FrameSize)
	return off, min(int64(x.FrameSize), x.ImageSize-off)
}

// Offsets returns where each frame starts in the seekable file, and one
// more entry: where the last one ends.
func (x *Index) Offsets() []int64 {
	o := make([]int64, len(x.Frames)+1)
	for i, f := range x.Frames {
		o[i+1] = o[i] + int64(f.CLen)
	}
	return o
}

// FrameBlocks is the number of blocks of a full frame.
func (x *Index) FrameBlocks() int { return x.FrameSize / x.BlockSize }

// Validate checks the index's fields against each other and the format's
// limits.
func (x *Index) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrIndex, fmt.Sprintf(format, a...))
	}
	switch {
	case x.BlockSize < MinBlockSize || x.BlockSize > MaxBlockSize || bits.OnesCount(uint(x.BlockSize)) != 1:
		return bad("block size %d is not a power of two from %d to %d", x.BlockSize, MinBlockSize, MaxBlockSize)
	case x.FrameSize < x.BlockSize || x.FrameSize > MaxFrameSize || x.FrameSize%x.BlockSize != 0:
		return bad("frame size %d is not a multiple of the %d-byte block of at most %d", x.FrameSize, x.BlockSize, MaxFrameSize)
	case x.Hash != HashSHA256:
		return bad("hash %q is not %s", x.Hash, HashSHA256)
	case len(x.Salt) > MaxSaltSize:
		return bad("a %d-byte salt is longer than %d", len(x.Salt), MaxSaltSize)
	case x.ImageSize <= 0 || x.ImageSize > MaxImageSize || x.ImageSize%int64(x.BlockSize) != 0:
		return bad("image size %d is not a positive multiple of the block size of at most %d", x.ImageSize, int64(MaxImageSize))
	case int64(len(x.Frames)) != FrameCount(x.ImageSize, x.FrameSize):
		return bad("%d frames for %d bytes in frames of %d", len(x.Frames), x.ImageSize, x.FrameSize)
	case x.Seekable.Name == "" || len(x.Seekable.Name) > MaxNameSize:
		return bad("seekable file name %q is empty or longer than %d bytes", x.Seekable.Name, MaxNameSize)
	case x.Seekable.Length <= 0 || x.Seekable.Length > 2*MaxImageSize:
		return bad("seekable file length %d", x.Seekable.Length)
	}
	for _, c := range []byte(x.Seekable.Name) {
		if c < 0x20 || c == 0x7f || c == '/' || c == '\\' {
			return bad("seekable file name %q holds a slash or a control character", x.Seekable.Name)
		}
	}
	if x.Seekable.Name == "." || x.Seekable.Name == ".." {
		return bad("seekable file name %q", x.Seekable.Name)
	}
	if v := x.Verity; v != nil {
		if v.HashBlockSize < 512 || v.HashBlockSize > 4096 || bits.OnesCount(uint(v.HashBlockSize)) != 1 {
			return bad("hash block size %d is not a power of two from 512 to 4096", v.HashBlockSize)
		}
		if v.Length <= 0 || v.Length > MaxImageSize || v.Length%int64(v.HashBlockSize) != 0 {
			return bad("hash image length %d is not a positive multiple of the hash block size", v.Length)
		}
	}
	maxC := MaxCompressedFrame(x.FrameSize)
	var total int64
	for i, f := range x.Frames {
		if f.CLen == 0 || int64(f.CLen) > maxC {
			return bad("frame %d is %d bytes compressed, not between 1 and %d", i, f.CLen, maxC)
		}
		total += int64(f.CLen)
	}
	if total > x.Seekable.Length {
		return bad("the frames take %d bytes, more than the %d of the seekable file", total, x.Seekable.Length)
	}
	return x.validateAppendix()
}

// validateAppendix checks the appendix against the frames (whose sizes
// were checked).
func (x *Index) validateAppendix() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: appendix: %s", ErrIndex, fmt.Sprintf(format, a...))
	}
	if n := x.AppendixSize(); n > MaxAppendixBytes {
		return bad("%d bytes, more than %d", n, MaxAppendixBytes)
	}
	for i := range x.Mixed {
		m := &x.Mixed[i]
		if m.Frame < 0 || m.Frame >= len(x.Frames) {
			return bad("no frame %d", m.Frame)
		}
		if i > 0 && m.Frame <= x.Mixed[i-1].Frame {
			return bad("frame %d after frame %d (the frames must increase)", m.Frame, x.Mixed[i-1].Frame)
		}
		_, size := x.FrameRange(m.Frame)
		k := int(size / int64(x.BlockSize))
		if len(m.Digests) != k*IDSize {
			return bad("frame %d: %d bytes of digests for %d blocks", m.Frame, len(m.Digests), k)
		}
		if id := WindowID(m.Digests); id != x.Frames[m.Frame].ID {
			return bad("frame %d: its digests are not those of its id", m.Frame)
		}
		if len(m.Blocks) == 0 || len(m.Blocks) >= k {
			return bad("frame %d: %d blocks in the blob, not between 1 and %d", m.Frame, len(m.Blocks), k-1)
		}
		for j, p := range m.Blocks {
			if int(p) >= k || (j > 0 && p <= m.Blocks[j-1]) {
				return bad("frame %d: block positions not increasing below %d", m.Frame, k)
			}
		}
		if len(m.Blob) == 0 || int64(len(m.Blob)) > MaxCompressedFrame(len(m.Blocks)*x.BlockSize) {
			return bad("frame %d: a blob of %d bytes for %d blocks", m.Frame, len(m.Blob), len(m.Blocks))
		}
	}
	return nil
}

// Marshal encodes the index (after validating it).
//
// The layout, integers little-endian:
//
//	magic "UPDOGDIX", u32 version (1)
//	u32 block size, u32 frame size, u64 image size, u32 frame count
//	u8 hash name length, hash name; u16 salt length, salt
//	u16 seekable name length, name, u64 seekable length, [32] its sha256
//	u8 verity flag; when 1: [16] uuid, u32 hash block size, u64 hash
//	  image length, [32] its sha256
//	per frame: [32] id, u32 compressed length
//	version 2 only, the appendix: u32 entry count (at least 1), per
//	  entry: u32 frame, u16 count of blob blocks, u16 each position, [32]
//	  per block of the frame its digest, u32 blob length, blob
//	[32] sha256 of everything before it
//
// The version is 1 without an appendix, 2 with one.
func (x *Index) Marshal() ([]byte, error) {
	if err := x.Validate(); err != nil {
		return nil, err
	}
	return x.encode(), nil
}

// encode is Marshal without the validation (tests make hostile indexes
// with it).
func (x *Index) encode() []byte {
	b := make([]byte, 0, 128+len(x.Salt)+len(x.Seekable.Name)+len(x.Frames)*(IDSize+4)+x.AppendixSize()+32)
	b = append(b, magic[:]...)
	version := uint32(formatVersion)
	if len(x.Mixed) > 0 {
		version = formatVersionAppendix
	}
	b = binary.LittleEndian.AppendUint32(b, version)
	b = binary.LittleEndian.AppendUint32(b, uint32(x.BlockSize))
	b = binary.LittleEndian.AppendUint32(b, uint32(x.FrameSize))
	b = binary.LittleEndian.AppendUint64(b, uint64(x.ImageSize))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(x.Frames)))
	b = append(b, byte(len(x.Hash)))
	b = append(b, x.Hash...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(x.Salt)))
	b = append(b, x.Salt...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(x.Seekable.Name)))
	b = append(b, x.Seekable.Name...)
	b = binary.LittleEndian.AppendUint64(b, uint64(x.Seekable.Length))
	b = append(b, x.Seekable.SHA256[:]...)
	if v := x.Verity; v != nil {
		b = append(b, 1)
		b = append(b, v.UUID[:]...)
		b = binary.LittleEndian.AppendUint32(b, uint32(v.HashBlockSize))
		b = binary.LittleEndian.AppendUint64(b, uint64(v.Length))
		b = append(b, v.SHA256[:]...)
	} else {
		b = append(b, 0)
	}
	for _, f := range x.Frames {
		b = append(b, f.ID[:]...)
		b = binary.LittleEndian.AppendUint32(b, f.CLen)
	}
	if len(x.Mixed) > 0 {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(x.Mixed)))
		for _, m := range x.Mixed {
			b = binary.LittleEndian.AppendUint32(b, uint32(m.Frame))
			b = binary.LittleEndian.AppendUint16(b, uint16(len(m.Blocks)))
			for _, p := range m.Blocks {
				b = binary.LittleEndian.AppendUint16(b, p)
			}
			b = append(b, m.Digests...)
			b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Blob)))
			b = append(b, m.Blob...)
		}
	}
	sum := sha256.Sum256(b)
	return append(b, sum[:]...)
}

// decoder reads fields from a byte slice, never past its end.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = fmt.Errorf("%w: it ends early", ErrIndex)
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) u8() uint8 {
	if p := d.take(1); p != nil {
		return p[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if p := d.take(2); p != nil {
		return binary.LittleEndian.Uint16(p)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if p := d.take(4); p != nil {
		return binary.LittleEndian.Uint32(p)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if p := d.take(8); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

// Parse decodes and validates an index, with or without an appendix. It
// never reads past b, and allocates no more than about twice b's size: the
// frame table's length is checked against the bytes left before it is
// made, and each appendix entry is read only from bytes that are there
// (the smallest entry takes 77 bytes, its slice headers about as many).
func Parse(b []byte) (*Index, error) {
	if len(b) < len(magic)+4+32 {
		return nil, fmt.Errorf("%w: %d bytes is too short for an index", ErrIndex, len(b))
	}
	body, sum := b[:len(b)-32], b[len(b)-32:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return nil, fmt.Errorf("%w: its checksum does not match its content", ErrIndex)
	}
	d := &decoder{b: body}
	if m := d.take(len(magic)); !bytes.Equal(m, magic[:]) {
		return nil, fmt.Errorf("%w: not an updog delta index (bad magic)", ErrIndex)
	}
	version := d.u32()
	if version != formatVersion && version != formatVersionAppendix {
		return nil, fmt.Errorf("%w: format version %d (this program reads %d and %d)", ErrIndex, version, formatVersion, formatVersionAppendix)
	}
	x := &Index{}
	x.BlockSize = int(d.u32())
	x.FrameSize = int(d.u32())
	size := d.u64()
	frames := d.u32()
	if size > math.MaxInt64 {
		return nil, fmt.Errorf("%w: image size %d", ErrIndex, size)
	}
	x.ImageSize = int64(size)
	x.Hash = string(d.take(int(d.u8())))
	x.Salt = bytes.Clone(d.take(int(d.u16())))
	x.Seekable.Name = string(d.take(int(d.u16())))
	sl := d.u64()
	if sl > math.MaxInt64 {
		return nil, fmt.Errorf("%w: seekable file length %d", ErrIndex, sl)
	}
	x.Seekable.Length = int64(sl)
	copy(x.Seekable.SHA256[:], d.take(32))
	switch flag := d.u8(); flag {
	case 0:
	case 1:
		v := &HashImage{}
		copy(v.UUID[:], d.take(16))
		v.HashBlockSize = int(d.u32())
		l := d.u64()
		if l > math.MaxInt64 {
			return nil, fmt.Errorf("%w: hash image length %d", ErrIndex, l)
		}
		v.Length = int64(l)
		copy(v.SHA256[:], d.take(32))
		x.Verity = v
	default:
		if d.err == nil {
			return nil, fmt.Errorf("%w: verity flag %d", ErrIndex, flag)
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	const entry = IDSize + 4
	if need := uint64(frames) * entry; uint64(len(d.b)) < need || (version == formatVersion && uint64(len(d.b)) != need) {
		return nil, fmt.Errorf("%w: %d frames need %d bytes, %d are left", ErrIndex, frames, need, len(d.b))
	}
	x.Frames = make([]Frame, frames)
	for i := range x.Frames {
		p := d.take(entry)
		copy(x.Frames[i].ID[:], p)
		x.Frames[i].CLen = binary.LittleEndian.Uint32(p[IDSize:])
	}
	if err := x.Validate(); err != nil {
		return nil, err
	}
	if version == formatVersion {
		return x, nil
	}
	if err := x.parseAppendix(d); err != nil {
		return nil, err
	}
	if len(d.b) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the appendix", ErrIndex, len(d.b))
	}
	if err := x.validateAppendix(); err != nil {
		return nil, err
	}
	return x, nil
}

// minMixed is the smallest appendix entry: a frame of two blocks, one of
// them in a one-byte blob.
const minMixed = 4 + 2 + 2 + 2*IDSize + 4 + 1

// parseAppendix reads the appendix of a version 2 index whose other
// fields are valid.
func (x *Index) parseAppendix(d *decoder) error {
	n := d.u32()
	if d.err != nil {
		return d.err
	}
	if n == 0 || uint64(n) > uint64(len(d.b))/minMixed {
		return fmt.Errorf("%w: appendix of %d entries in %d bytes", ErrIndex, n, len(d.b))
	}
	x.Mixed = make([]Mixed, n)
	for i := range x.Mixed {
		m := &x.Mixed[i]
		f := d.u32()
		if d.err == nil && f >= uint32(len(x.Frames)) {
			return fmt.Errorf("%w: appendix: no frame %d", ErrIndex, f)
		}
		m.Frame = int(f)
		if p := d.take(2 * int(d.u16())); p != nil {
			m.Blocks = make([]uint16, len(p)/2)
			for j := range m.Blocks {
				m.Blocks[j] = binary.LittleEndian.Uint16(p[2*j:])
			}
		}
		_, size := x.FrameRange(m.Frame)
		m.Digests = bytes.Clone(d.take(int(size/int64(x.BlockSize)) * IDSize))
		bl := d.u32()
		if d.err == nil && int64(bl) > MaxCompressedFrame(x.FrameSize) {
			return fmt.Errorf("%w: appendix: frame %d: a blob of %d bytes", ErrIndex, m.Frame, bl)
		}
		m.Blob = bytes.Clone(d.take(int(bl)))
		if d.err != nil {
			return d.err
		}
	}
	return nil
}
