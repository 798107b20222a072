package image

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// ErrFAT means a FAT file system cannot be laid out as asked.
var ErrFAT = errors.New("image: cannot make a FAT file system")

// FATOptions describe a FAT file system and the files it holds.
type FATOptions struct {
	// Size is the file system's size in bytes: a whole number of sectors.
	Size int64
	// SectorSize is the logical sector size: 512 or 4096.
	SectorSize int
	// Serial is the volume serial number.
	Serial uint32
	// HiddenSectors is the first sector of the partition on its disk.
	HiddenSectors uint32
	// Files are put in the file system, in this order, each in clusters
	// of its own in a row; the directories on their paths are made.
	Files []FATFile
	// Time (Unix seconds, UTC) is every file's and directory's creation
	// and modification time, held to FAT's 1980–2107.
	Time int64
}

// FATFile is a file WriteFAT puts in the file system.
type FATFile struct {
	// Path is the file's path from the root, "/"-separated. Each part is
	// an 8.3 name (up to 8 characters, optionally a dot and up to 3 more:
	// letters, digits and !#$%&'()-@^_`{}~), its name and its extension
	// each all capitals or all small letters (written as Windows NT and
	// Linux's vfat do, with no long-name entries). FAT compares names
	// without case.
	Path string
	// Size is the file's length; Data must give exactly that many bytes.
	Size int64
	Data io.Reader
}

// WriteFAT writes a FAT12 or FAT16 file system (whichever the cluster
// count makes it, as the FAT specification decides) to w: boot sector, two
// FATs, the root directory and o.Files with their directories. Only
// o.Serial and o.Time end up in it besides the layout and the files, so it
// is reproducible. It needs no mtools and no mount. The file data is
// streamed, never held in memory.
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
			return writeFAT(w, o, fatGeometry{bps: bps, total: total, spc: spc, fatSz: fatSz, rootSecs: rootSecs,
				rsvd: rsvd, nfats: nfats, rootEntries: rootEntries, clusters: clusters, fat16: fat16})
		}
	}
	return fmt.Errorf("%w: %d bytes needs FAT32, which is not supported", ErrFAT, o.Size)
}

// fatGeometry is where everything of a FAT file system is, in sectors
// (bps bytes each).
type fatGeometry struct {
	bps, total, spc, fatSz, rootSecs, rsvd, nfats, rootEntries int64
	clusters                                                   int64 // data clusters, numbered from 2
	fat16                                                      bool
}

func writeFAT(w io.WriterAt, o FATOptions, g fatGeometry) error {
	bps, total, spc, fatSz, rootSecs, rsvd, nfats, rootEntries, fat16 := g.bps, g.total, g.spc, g.fatSz, g.rootSecs, g.rsvd, g.nfats, g.rootEntries, g.fat16
	tree, err := planFAT(o, g)
	if err != nil {
		return err
	}
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
	tree.chain(fat, fat16)
	for i := int64(0); i < nfats; i++ {
		if _, err := w.WriteAt(fat, (rsvd+i*fatSz)*bps); err != nil {
			return fmt.Errorf("image: writing FAT %d: %w", i+1, err)
		}
	}
	root := make([]byte, rootSecs*bps)
	tree.root.entries(root, o.Time)
	if _, err := w.WriteAt(root, (rsvd+nfats*fatSz)*bps); err != nil {
		return fmt.Errorf("image: writing the FAT root directory: %w", err)
	}
	dataOff := (rsvd + nfats*fatSz + rootSecs) * bps
	clusterOff := func(c int64) int64 { return dataOff + (c-2)*spc*bps }
	for _, d := range tree.dirs {
		buf := make([]byte, d.clusters*spc*bps)
		d.entries(buf, o.Time)
		if _, err := w.WriteAt(buf, clusterOff(d.first)); err != nil {
			return fmt.Errorf("image: writing the FAT directory %s: %w", d.path, err)
		}
	}
	for _, f := range tree.files {
		if f.size == 0 {
			continue
		}
		n, err := io.Copy(io.NewOffsetWriter(w, clusterOff(f.first)), io.LimitReader(f.data, f.size))
		if err != nil {
			return fmt.Errorf("image: writing %s into the FAT file system: %w", f.path, err)
		}
		if n != f.size {
			return fmt.Errorf("%w: %s: %d bytes given for a %d-byte file", ErrFAT, f.path, n, f.size)
		}
	}
	return nil
}

// fatNode is a directory or file of the file system being laid out.
type fatNode struct {
	path     string
	name     [11]byte // the 8.3 name, space-padded capitals
	ntCase   byte     // Windows NT's case bits: 0x08 small-letter name, 0x10 small-letter extension
	dir      bool
	children []*fatNode // directories only, in the order made
	parent   *fatNode
	first    int64 // first cluster (0: none)
	clusters int64
	size     int64
	data     io.Reader
}

// fatTree is the layout of the files and directories.
type fatTree struct {
	root  *fatNode
	dirs  []*fatNode // every directory but the root, in the order made
	files []*fatNode
}

// planFAT lays o.Files out: the directories' clusters first, then each
// file's, all in a row.
func planFAT(o FATOptions, g fatGeometry) (*fatTree, error) {
	t := &fatTree{root: &fatNode{dir: true}}
	for _, f := range o.Files {
		parts := strings.Split(f.Path, "/")
		if f.Size < 0 || f.Data == nil && f.Size > 0 {
			return nil, fmt.Errorf("%w: %s: no data for %d bytes", ErrFAT, f.Path, f.Size)
		}
		d := t.root
		for i, p := range parts {
			name, ntCase, err := shortName(p)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: %w", ErrFAT, f.Path, err)
			}
			last := i == len(parts)-1
			var next *fatNode
			for _, c := range d.children {
				if c.name == name {
					next = c
				}
			}
			switch {
			case next != nil && (last || !next.dir):
				return nil, fmt.Errorf("%w: %s: %s is there already", ErrFAT, f.Path, strings.Join(parts[:i+1], "/"))
			case next != nil:
				d = next
				continue
			}
			n := &fatNode{path: strings.Join(parts[:i+1], "/"), name: name, ntCase: ntCase, parent: d}
			d.children = append(d.children, n)
			if last {
				n.size, n.data = f.Size, f.Data
				t.files = append(t.files, n)
			} else {
				n.dir = true
				t.dirs = append(t.dirs, n)
			}
			d = n
		}
	}
	if len(t.root.children) > int(g.rootEntries) {
		return nil, fmt.Errorf("%w: %d entries in the root directory, which holds %d", ErrFAT, len(t.root.children), g.rootEntries)
	}
	clusterBytes := g.spc * g.bps
	next := int64(2)
	for _, d := range t.dirs {
		d.first = next
		d.clusters = max(1, ((2+int64(len(d.children)))*32+clusterBytes-1)/clusterBytes)
		next += d.clusters
	}
	for _, f := range t.files {
		if f.size == 0 {
			continue
		}
		f.first = next
		f.clusters = (f.size + clusterBytes - 1) / clusterBytes
		next += f.clusters
	}
	if used := next - 2; used > g.clusters {
		return nil, fmt.Errorf("%w: the files need %d clusters of %d bytes, the file system has %d", ErrFAT, used, clusterBytes, g.clusters)
	}
	return t, nil
}

// chain writes the cluster chains of every directory and file into fat.
func (t *fatTree) chain(fat []byte, fat16 bool) {
	set := func(n int64, v uint16) {
		if fat16 {
			binary.LittleEndian.PutUint16(fat[2*n:], v)
			return
		}
		off := n * 3 / 2
		if n%2 == 0 {
			fat[off] = byte(v)
			fat[off+1] = fat[off+1]&0xF0 | byte(v>>8)&0x0F
		} else {
			fat[off] = fat[off]&0x0F | byte(v<<4)
			fat[off+1] = byte(v >> 4)
		}
	}
	eoc := uint16(0xFFF)
	if fat16 {
		eoc = 0xFFFF
	}
	for _, list := range [][]*fatNode{t.dirs, t.files} {
		for _, n := range list {
			for c := n.first; c < n.first+n.clusters; c++ {
				if c == n.first+n.clusters-1 {
					set(c, eoc)
				} else {
					set(c, uint16(c+1))
				}
			}
		}
	}
}

// entries writes directory d's entries into buf: "." and ".." (but in
// the root), then its children.
func (d *fatNode) entries(buf []byte, unix int64) {
	date, tm, tenth := fatTime(unix)
	put := func(i int, name [11]byte, ntCase byte, dir bool, first, size int64) {
		e := buf[i*32 : i*32+32]
		copy(e, name[:])
		if dir {
			e[11] = 0x10
		} else {
			e[11] = 0x20 // archive, as every FAT driver sets it on a new file
		}
		e[12] = ntCase
		e[13] = tenth
		le := binary.LittleEndian
		le.PutUint16(e[14:], tm)
		le.PutUint16(e[16:], date)
		le.PutUint16(e[18:], date)
		le.PutUint16(e[20:], uint16(first>>16))
		le.PutUint16(e[22:], tm)
		le.PutUint16(e[24:], date)
		le.PutUint16(e[26:], uint16(first))
		le.PutUint32(e[28:], uint32(size))
	}
	i := 0
	if d.parent != nil {
		put(0, [11]byte{'.', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '}, 0, true, d.first, 0)
		put(1, [11]byte{'.', '.', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '}, 0, true, d.parent.first, 0)
		i = 2
	}
	for _, c := range d.children {
		put(i, c.name, c.ntCase, c.dir, c.first, c.size)
		i++
	}
}

// fatTime is a Unix time as FAT's date, time (2-second steps) and
// hundredths, held to 1980–2107.
func fatTime(unix int64) (date, tm uint16, tenth byte) {
	t := time.Unix(unix, 0).UTC()
	if t.Year() < 1980 {
		t = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	if t.Year() > 2107 {
		t = time.Date(2107, 12, 31, 23, 59, 58, 0, time.UTC)
	}
	date = uint16(t.Year()-1980)<<9 | uint16(t.Month())<<5 | uint16(t.Day())
	tm = uint16(t.Hour())<<11 | uint16(t.Minute())<<5 | uint16(t.Second()/2)
	return date, tm, byte(t.Second()%2) * 100
}

// shortName checks an 8.3 name and returns it space-padded in capitals,
// with the NT case bits of a small-letter name or extension.
func shortName(s string) (name [11]byte, ntCase byte, err error) {
	base, ext, _ := strings.Cut(s, ".")
	if base == "" || len(base) > 8 || len(ext) > 3 || strings.Contains(ext, ".") || strings.HasSuffix(s, ".") {
		return name, 0, fmt.Errorf("%q is not an 8.3 name", s)
	}
	for i := range name {
		name[i] = ' '
	}
	part := func(p string, dst []byte, lowerBit byte) error {
		var upper, lower bool
		for i := 0; i < len(p); i++ {
			c := p[i]
			switch {
			case c >= 'A' && c <= 'Z':
				upper = true
			case c >= 'a' && c <= 'z':
				lower = true
				c -= 'a' - 'A'
			case c >= '0' && c <= '9' || strings.IndexByte("!#$%&'()-@^_`{}~", c) >= 0:
			default:
				return fmt.Errorf("%q has a character an 8.3 name cannot: %q", s, c)
			}
			dst[i] = c
		}
		if upper && lower {
			return fmt.Errorf("%q mixes capitals and small letters in one part, which takes a long name", s)
		}
		if lower {
			ntCase |= lowerBit
		}
		return nil
	}
	if err := part(base, name[:8], 0x08); err != nil {
		return name, 0, err
	}
	if err := part(ext, name[8:], 0x10); err != nil {
		return name, 0, err
	}
	return name, ntCase, nil
}
