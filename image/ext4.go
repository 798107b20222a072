package image

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// mke2fs -d copies each file's access, change and modification times from
// the source tree into the new file system. The change time cannot be set
// by anyone, so the same tree copied twice gives two images that differ
// in every inode. NormalizeExt4 rewrites those times afterwards, in the
// image itself, which is what makes an ext4 build reproducible.

// ErrExt4 means the bytes are not an ext4 file system NormalizeExt4 can
// work on.
var ErrExt4 = errors.New("image: not a usable ext4 file system")

// Ext4Options say what NormalizeExt4 sets.
type Ext4Options struct {
	// Time is set as the access, change, modification and creation time
	// of every inode in use (nanoseconds zero).
	Time int64
	// AllRoot makes every inode owned by user and group 0.
	AllRoot bool
}

// Ext4Stats describe a file system.
type Ext4Stats struct {
	BlockSize  int64
	Blocks     uint64
	FreeBlocks uint64
	Inodes     uint32 // in use
}

// UsedBytes is how much of the file system is in use.
func (s Ext4Stats) UsedBytes() int64 { return int64(s.Blocks-s.FreeBlocks) * s.BlockSize }

const (
	ext4Magic          = 0xEF53
	ext4IncompatMetaBG = 0x10
	ext4Incompat64Bit  = 0x80
	ext4IncompatSeed   = 0x2000
	ext4RoMetadataCsum = 0x400
	ext4BGInodeUninit  = 0x1
	ext4OldInodeSize   = 128
)

// maxInodeTableRead bounds one read of an inode table (a group's used
// inodes) or of the group descriptors, so a corrupt superblock cannot make
// us allocate without bound.
const maxInodeTableRead = 64 << 20

type ext4FS interface {
	io.ReaderAt
	io.WriterAt
}

// NormalizeExt4 sets the times (and, with AllRoot, the owners) of every
// inode in use in the ext4 file system dev holds, recomputing each
// inode's checksum when the file system has metadata_csum. Each checksum
// is checked before the inode is changed, so a file system it misreads is
// refused rather than damaged. It stops between block groups when ctx
// ends.
func NormalizeExt4(ctx context.Context, dev ext4FS, o Ext4Options) (Ext4Stats, error) {
	var st Ext4Stats
	sb := make([]byte, 1024)
	if _, err := dev.ReadAt(sb, 1024); err != nil {
		return st, fmt.Errorf("%w: reading the superblock: %w", ErrExt4, err)
	}
	le := binary.LittleEndian
	if le.Uint16(sb[0x38:]) != ext4Magic {
		return st, fmt.Errorf("%w: no ext4 superblock magic", ErrExt4)
	}
	logBS := le.Uint32(sb[0x18:])
	if logBS > 6 {
		return st, fmt.Errorf("%w: block size 1024<<%d", ErrExt4, logBS)
	}
	bs := int64(1024) << logBS
	incompat, roCompat := le.Uint32(sb[0x60:]), le.Uint32(sb[0x64:])
	if incompat&ext4IncompatMetaBG != 0 {
		return st, fmt.Errorf("%w: meta_bg is not supported", ErrExt4)
	}
	inodeSize := int64(ext4OldInodeSize)
	if le.Uint32(sb[0x4C:]) >= 1 {
		inodeSize = int64(le.Uint16(sb[0x58:]))
	}
	if inodeSize < ext4OldInodeSize || inodeSize > bs || inodeSize&(inodeSize-1) != 0 {
		return st, fmt.Errorf("%w: inode size %d", ErrExt4, inodeSize)
	}
	descSize := int64(32)
	blocks := uint64(le.Uint32(sb[0x04:]))
	free := uint64(le.Uint32(sb[0x0C:]))
	if incompat&ext4Incompat64Bit != 0 {
		descSize = int64(le.Uint16(sb[0xFE:]))
		blocks |= uint64(le.Uint32(sb[0x150:])) << 32
		free |= uint64(le.Uint32(sb[0x158:])) << 32
		if descSize < 64 || descSize > bs || descSize&(descSize-1) != 0 {
			return st, fmt.Errorf("%w: group descriptor size %d", ErrExt4, descSize)
		}
	}
	st = Ext4Stats{BlockSize: bs, Blocks: blocks, FreeBlocks: free}
	firstData := uint64(le.Uint32(sb[0x14:]))
	bpg, ipg := uint64(le.Uint32(sb[0x20:])), uint64(le.Uint32(sb[0x28:]))
	if bpg == 0 || ipg == 0 || blocks <= firstData || ipg > uint64(bs)*8 || free > blocks {
		return st, fmt.Errorf("%w: %d blocks, %d per group, %d inodes per group", ErrExt4, blocks, bpg, ipg)
	}
	groups := (blocks - firstData + bpg - 1) / bpg
	if groups*uint64(descSize) > maxInodeTableRead {
		return st, fmt.Errorf("%w: %d block groups", ErrExt4, groups)
	}
	csum := roCompat&ext4RoMetadataCsum != 0
	var seed uint32
	if csum {
		if incompat&ext4IncompatSeed != 0 {
			seed = le.Uint32(sb[0x270:])
		} else {
			seed = crc32c(^uint32(0), sb[0x68:0x78])
		}
	}
	gdt := make([]byte, groups*uint64(descSize))
	if _, err := dev.ReadAt(gdt, int64(firstData+1)*bs); err != nil {
		return st, fmt.Errorf("%w: reading the group descriptors: %w", ErrExt4, err)
	}
	bitmap := make([]byte, bs)
	for g := uint64(0); g < groups; g++ {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		d := gdt[g*uint64(descSize):]
		if le.Uint16(d[0x12:])&ext4BGInodeUninit != 0 {
			continue
		}
		bmBlock, table := uint64(le.Uint32(d[0x04:])), uint64(le.Uint32(d[0x08:]))
		if descSize >= 64 {
			bmBlock |= uint64(le.Uint32(d[0x24:])) << 32
			table |= uint64(le.Uint32(d[0x28:])) << 32
		}
		if bmBlock >= blocks || table >= blocks {
			return st, fmt.Errorf("%w: group %d: bitmap or inode table past the end", ErrExt4, g)
		}
		if _, err := dev.ReadAt(bitmap, int64(bmBlock)*bs); err != nil {
			return st, fmt.Errorf("%w: group %d: reading the inode bitmap: %w", ErrExt4, g, err)
		}
		last := -1
		for i := uint64(0); i < ipg; i++ {
			if bitmap[i/8]&(1<<(i%8)) != 0 {
				last = int(i)
			}
		}
		if last < 0 {
			continue
		}
		n := int64(last+1) * inodeSize
		if n > maxInodeTableRead {
			return st, fmt.Errorf("%w: group %d: an inode table of %d bytes", ErrExt4, g, n)
		}
		tbl := make([]byte, n)
		off := int64(table) * bs
		if _, err := dev.ReadAt(tbl, off); err != nil {
			return st, fmt.Errorf("%w: group %d: reading the inode table: %w", ErrExt4, g, err)
		}
		for i := 0; i <= last; i++ {
			if bitmap[i/8]&(1<<(i%8)) == 0 {
				continue
			}
			st.Inodes++
			ino := uint32(g*ipg) + uint32(i) + 1
			raw := tbl[int64(i)*inodeSize : int64(i+1)*inodeSize]
			if err := normalizeInode(raw, ino, seed, csum, o); err != nil {
				return st, fmt.Errorf("%w: inode %d: %w", ErrExt4, ino, err)
			}
		}
		if _, err := dev.WriteAt(tbl, off); err != nil {
			return st, fmt.Errorf("image: group %d: writing the inode table: %w", g, err)
		}
	}
	return st, nil
}

// inodeFits reports whether the field at off (size bytes) is inside the
// inode's extra part.
func inodeFits(raw []byte, off, size int) bool {
	if len(raw) <= ext4OldInodeSize {
		return false
	}
	extra := int(binary.LittleEndian.Uint16(raw[0x80:]))
	return ext4OldInodeSize+extra >= off+size && off+size <= len(raw)
}

func normalizeInode(raw []byte, ino, seed uint32, csum bool, o Ext4Options) error {
	le := binary.LittleEndian
	if len(raw) > ext4OldInodeSize {
		if extra := int(le.Uint16(raw[0x80:])); ext4OldInodeSize+extra > len(raw) || extra%4 != 0 {
			return fmt.Errorf("extra inode size %d", extra)
		}
	}
	if csum {
		got, want := storedInodeCsum(raw), inodeCsum(raw, ino, seed)
		if !inodeFits(raw, 0x82, 2) {
			want &= 0xffff
		}
		if got != want {
			return fmt.Errorf("checksum %#x, computed %#x", got, want)
		}
	}
	lo := uint32(o.Time)
	epoch := uint32((o.Time-int64(int32(lo)))>>32) & 3
	for _, f := range []int{0x08, 0x0C, 0x10} { // atime, ctime, mtime
		le.PutUint32(raw[f:], lo)
	}
	for _, f := range []int{0x84, 0x88, 0x8C, 0x94} { // ctime, mtime, atime, crtime extra
		if inodeFits(raw, f, 4) {
			le.PutUint32(raw[f:], epoch)
		}
	}
	if inodeFits(raw, 0x90, 4) { // crtime
		le.PutUint32(raw[0x90:], lo)
	}
	if o.AllRoot {
		for _, f := range []int{0x02, 0x18, 0x78, 0x7A} { // uid, gid and their high halves
			le.PutUint16(raw[f:], 0)
		}
	}
	if csum {
		c := inodeCsum(raw, ino, seed)
		le.PutUint16(raw[0x7C:], uint16(c))
		if inodeFits(raw, 0x82, 2) {
			le.PutUint16(raw[0x82:], uint16(c>>16))
		}
	}
	return nil
}

func storedInodeCsum(raw []byte) uint32 {
	le := binary.LittleEndian
	c := uint32(le.Uint16(raw[0x7C:]))
	if inodeFits(raw, 0x82, 2) {
		c |= uint32(le.Uint16(raw[0x82:])) << 16
	}
	return c
}

// inodeCsum is ext4_inode_csum: crc32c over the inode number, the
// generation and the inode with its checksum fields as zeros.
func inodeCsum(raw []byte, ino, seed uint32) uint32 {
	le := binary.LittleEndian
	var b [4]byte
	le.PutUint32(b[:], ino)
	c := crc32c(seed, b[:])
	c = crc32c(c, raw[0x64:0x68]) // i_generation
	var zero [2]byte
	c = crc32c(c, raw[:0x7C])
	c = crc32c(c, zero[:])
	c = crc32c(c, raw[0x7E:ext4OldInodeSize])
	if len(raw) > ext4OldInodeSize {
		c = crc32c(c, raw[ext4OldInodeSize:0x82])
		rest := 0x82
		if inodeFits(raw, 0x82, 2) {
			c = crc32c(c, zero[:])
			rest = 0x84
		}
		c = crc32c(c, raw[rest:])
	}
	return c
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c is the kernel's crc32c(seed, p): no inversion on the way in or
// out (Go's crc32.Update inverts both).
func crc32c(seed uint32, p []byte) uint32 {
	return ^crc32.Update(^seed, castagnoli, p)
}
