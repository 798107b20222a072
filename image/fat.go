package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrFAT means a FAT file system cannot be laid out as asked.
var ErrFAT = errors.New("image: cannot make a FAT file system")

// FATOptions describe an empty FAT file system.
type FATOptions struct {
	// Size is the file system's size in bytes: a whole number of sectors.
	Size int64
	// SectorSize is the logical sector size: 512 or 4096.
	SectorSize int
	// Serial is the volume serial number.
	Serial uint32
	// HiddenSectors is the first sector of the partition on its disk.
	HiddenSectors uint32
}

// WriteFAT writes an empty FAT12 or FAT16 file system (whichever the
// cluster count makes it, as the FAT specification decides) to w: boot
// sector, two FATs and an empty root directory. It writes nothing that
// depends on the time, so it is reproducible. It needs no mtools and no
// mount.
func WriteFAT(w io.WriterAt, o FATOptions) error {
	bps := int64(o.SectorSize)
	if bps != 512 && bps != 4096 {
		return fmt.Errorf("%w: sector size %d", ErrFAT, o.SectorSize)
	}
	if o.Size <= 0 || o.Size%bps != 0 {
		return fmt.Errorf("%w: size %d is not a whole number of %d-byte sectors", ErrFAT, o.Size, bps)
	}
	total := o.Size / bps
	const rsvd, nfats, rootEntries = 1, 2, 512
	rootSecs := (rootEntries*32 + bps - 1) / bps
	for spc := int64(1); spc <= 128; spc *= 2 {
		for _, fat16 := range []bool{false, true} {
			entryBits := int64(12)
			if fat16 {
				entryBits = 16
			}
			// The smallest FAT that maps every cluster left beside it.
			var fatSz, clusters int64
			for fatSz = 1; ; fatSz++ {
				clusters = (total - rsvd - nfats*fatSz - rootSecs) / spc
				if clusters <= 0 {
					break
				}
				if ((clusters+2)*entryBits+7)/8 <= fatSz*bps {
					break
				}
			}
			if clusters <= 0 {
				return fmt.Errorf("%w: %d bytes is too small", ErrFAT, o.Size)
			}
			if fat16 != (clusters >= 4085) || clusters > 65524 {
				continue // not the type this cluster count makes it
			}
			return writeFAT(w, o, bps, total, spc, fatSz, rootSecs, rsvd, nfats, rootEntries, fat16)
		}
	}
	return fmt.Errorf("%w: %d bytes needs FAT32, which is not supported", ErrFAT, o.Size)
}

func writeFAT(w io.WriterAt, o FATOptions, bps, total, spc, fatSz, rootSecs, rsvd, nfats, rootEntries int64, fat16 bool) error {
	le := binary.LittleEndian
	bs := make([]byte, bps)
	copy(bs, []byte{0xEB, 0x3C, 0x90})
	copy(bs[3:], "updog   ")
	le.PutUint16(bs[11:], uint16(bps))
	bs[13] = byte(spc)
	le.PutUint16(bs[14:], uint16(rsvd))
	bs[16] = byte(nfats)
	le.PutUint16(bs[17:], uint16(rootEntries))
	if total < 65536 {
		le.PutUint16(bs[19:], uint16(total))
	} else {
		le.PutUint32(bs[32:], uint32(total))
	}
	bs[21] = 0xF8 // fixed disk
	le.PutUint16(bs[22:], uint16(fatSz))
	le.PutUint16(bs[24:], 63)  // sectors per track
	le.PutUint16(bs[26:], 255) // heads
	le.PutUint32(bs[28:], o.HiddenSectors)
	bs[36] = 0x80 // drive number
	bs[38] = 0x29 // extended boot signature
	le.PutUint32(bs[39:], o.Serial)
	copy(bs[43:], "NO NAME    ")
	if fat16 {
		copy(bs[54:], "FAT16   ")
	} else {
		copy(bs[54:], "FAT12   ")
	}
	bs[510], bs[511] = 0x55, 0xAA
	if _, err := w.WriteAt(bs, 0); err != nil {
		return fmt.Errorf("image: writing the FAT boot sector: %w", err)
	}
	fat := make([]byte, fatSz*bps)
	if fat16 {
		copy(fat, []byte{0xF8, 0xFF, 0xFF, 0xFF})
	} else {
		copy(fat, []byte{0xF8, 0xFF, 0xFF})
	}
	for i := int64(0); i < nfats; i++ {
		if _, err := w.WriteAt(fat, (rsvd+i*fatSz)*bps); err != nil {
			return fmt.Errorf("image: writing FAT %d: %w", i+1, err)
		}
	}
	root := make([]byte, rootSecs*bps)
	if _, err := w.WriteAt(root, (rsvd+nfats*fatSz)*bps); err != nil {
		return fmt.Errorf("image: writing the FAT root directory: %w", err)
	}
	return nil
}
