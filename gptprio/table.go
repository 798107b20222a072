package gptprio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"unicode/utf16"

	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/failpoint"
)

const (
	gptSignature = "EFI PART"
	gptRevision  = 0x00010000
	headerSize   = 92
	entrySize    = 128
	nameBytes    = 72

	// DefaultEntries is the number of partition entries in a new table (the
	// UEFI minimum of 16 KiB of entries).
	DefaultEntries = 128
	// MaxEntryArrayBytes bounds the partition entry array a reader will
	// accept, so a corrupt header cannot make us allocate gigabytes.
	MaxEntryArrayBytes = 1 << 20
)

// Sentinel errors.
var (
	// ErrNoValidTable means neither the primary nor the backup GPT is valid.
	// The error also carries the reason for each copy.
	ErrNoValidTable = errors.New("gptprio: no valid GPT: primary and backup copies are both damaged")
	// ErrInvalidTable means a table handed to Write is inconsistent
	// (overlapping partitions, partitions outside the usable range, ...).
	ErrInvalidTable = errors.New("gptprio: invalid partition table")
)

// CopyError says what is wrong with one copy (primary or backup) of a GPT.
type CopyError struct {
	Which   string // "primary" or "backup"
	LBA     uint64 // where its header was looked for
	Problem string
}

func (e *CopyError) Error() string {
	return fmt.Sprintf("%s GPT header at LBA %d: %s", e.Which, e.LBA, e.Problem)
}

// BothCopiesError is returned by Read when neither copy is usable. It
// matches ErrNoValidTable with errors.Is, and each copy's *CopyError with
// errors.As.
type BothCopiesError struct {
	Primary, Backup error
}

func (e *BothCopiesError) Error() string {
	return fmt.Sprintf("%v (%v; %v)", ErrNoValidTable, e.Primary, e.Backup)
}

// Unwrap exposes the sentinel and both causes.
func (e *BothCopiesError) Unwrap() []error { return []error{ErrNoValidTable, e.Primary, e.Backup} }

// Partition is one entry of the partition entry array. Partition numbers
// are 1-based, as the kernel and sgdisk count them.
type Partition struct {
	Number     int
	Type       GUID
	ID         GUID // unique partition GUID
	FirstLBA   uint64
	LastLBA    uint64
	Attributes Attr
	name       [nameBytes]byte // raw UTF-16LE, kept byte for byte
	extra      []byte          // entry bytes past 128 when the entry size is larger
}

// Used reports whether the entry describes a partition (non-zero type GUID).
func (p Partition) Used() bool { return !p.Type.IsZero() }

// Name decodes the UTF-16LE partition name.
func (p Partition) Name() string {
	u := make([]uint16, 0, nameBytes/2)
	for i := 0; i < nameBytes; i += 2 {
		c := binary.LittleEndian.Uint16(p.name[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// SetName sets the partition name; it must fit in 36 UTF-16 code units.
func (p *Partition) SetName(s string) error {
	u := utf16.Encode([]rune(s))
	if len(u) > nameBytes/2 {
		return fmt.Errorf("gptprio: partition name %q is longer than %d UTF-16 units", s, nameBytes/2)
	}
	clear(p.name[:])
	for i, c := range u {
		binary.LittleEndian.PutUint16(p.name[2*i:], c)
	}
	return nil
}

// Sectors is the partition's length in sectors.
func (p Partition) Sectors() uint64 { return p.LastLBA - p.FirstLBA + 1 }

// Table is a GUID partition table as read from (or to be written to) a disk.
// Partitions holds every slot of the entry array, used or not, so that a
// read-modify-write leaves the entries it did not change byte-identical.
type Table struct {
	SectorSize       int
	DiskGUID         GUID
	FirstUsableLBA   uint64
	LastUsableLBA    uint64
	BackupLBA        uint64 // the backup header (normally the last sector)
	EntriesLBA       uint64 // the primary entry array (normally 2)
	BackupEntriesLBA uint64 // the backup entry array (just before BackupLBA)
	EntrySize        int
	Partitions       []Partition

	// What Read found. Write uses RecoveredFromBackup to choose a safe write
	// order; the others are for reporting.

	// RecoveredFromBackup is set when the primary copy was damaged and the
	// table was read from the backup. The next Write repairs the primary.
	RecoveredFromBackup bool
	// PrimaryProblem and BackupProblem say what was wrong with each copy
	// (nil when it was fine).
	PrimaryProblem, BackupProblem error
	// BackupStale is set when both copies are valid but differ (the state a
	// power cut during an earlier write can leave). The next Write makes
	// them agree.
	BackupStale bool
	// ProtectiveMBR is set when LBA 0 holds an MBR with a 0xEE (GPT
	// protective) record. Write adds one when it is missing.
	ProtectiveMBR bool
}

// Clone returns a deep copy.
func (t *Table) Clone() *Table {
	c := *t
	c.Partitions = slices.Clone(t.Partitions)
	return &c
}

// Partition returns partition number n (1-based), or nil if there is no
// such slot or it is unused.
func (t *Table) Partition(n int) *Partition {
	if n < 1 || n > len(t.Partitions) || !t.Partitions[n-1].Used() {
		return nil
	}
	return &t.Partitions[n-1]
}

// Used returns the used partitions in table order.
func (t *Table) Used() []Partition {
	var out []Partition
	for _, p := range t.Partitions {
		if p.Used() {
			out = append(out, p)
		}
	}
	return out
}

func (t *Table) entrySectors() uint64 {
	return ceilDiv(uint64(len(t.Partitions)*t.EntrySize), uint64(t.SectorSize))
}

// New returns an empty table for a disk of diskBytes bytes with the given
// sector size, laid out as sgdisk and cgpt do: primary entries at LBA 2,
// DefaultEntries entries, backup header in the last sector. The disk must
// be a whole number of sectors, and the disk GUID must not be all zeros
// (the GPT requires a unique one); both are refused with errors wrapping
// ErrInvalidTable.
func New(diskBytes int64, sectorSize int, diskGUID GUID) (*Table, error) {
	if sectorSize != 512 && sectorSize != 4096 {
		return nil, fmt.Errorf("%w: sector size %d is not 512 or 4096", ErrInvalidTable, sectorSize)
	}
	if diskBytes < 0 || diskBytes%int64(sectorSize) != 0 {
		return nil, fmt.Errorf("%w: a disk of %d bytes is not a whole number of %d-byte sectors", ErrInvalidTable, diskBytes, sectorSize)
	}
	if diskGUID.IsZero() {
		return nil, fmt.Errorf("%w: the disk GUID is all zeros", ErrInvalidTable)
	}
	sectors := uint64(diskBytes) / uint64(sectorSize)
	es := ceilDiv(DefaultEntries*entrySize, uint64(sectorSize))
	if sectors < 3+2*es+1 {
		return nil, fmt.Errorf("gptprio: a %d-byte disk is too small for a GPT", diskBytes)
	}
	last := sectors - 1
	t := &Table{
		SectorSize:       sectorSize,
		DiskGUID:         diskGUID,
		EntriesLBA:       2,
		FirstUsableLBA:   2 + es,
		BackupLBA:        last,
		BackupEntriesLBA: last - es,
		LastUsableLBA:    last - es - 1,
		EntrySize:        entrySize,
		Partitions:       make([]Partition, DefaultEntries),
		ProtectiveMBR:    false,
	}
	for i := range t.Partitions {
		t.Partitions[i].Number = i + 1
	}
	return t, nil
}

// header is one decoded GPT header.
type header struct {
	myLBA, altLBA, firstUsable, lastUsable, entriesLBA uint64
	diskGUID                                           GUID
	numEntries, entrySize, entriesCRC                  uint32
}

// ProbeSectorSize looks for a GPT header signature at LBA 1 for 512- and
// 4096-byte sectors and returns the sector size it was found at, or 0. It
// is for disk image files, which have no sector size of their own.
func ProbeSectorSize(r io.ReaderAt) int {
	for _, ss := range []int{512, 4096} {
		b := make([]byte, 8)
		if _, err := r.ReadAt(b, int64(ss)); err == nil && string(b) == gptSignature {
			return ss
		}
	}
	return 0
}

// Read reads the GPT of d. It validates the primary copy (signature, header
// CRC32, location, geometry, entry array CRC32, partition bounds) and falls
// back to the backup copy when the primary is damaged, setting
// RecoveredFromBackup. It never returns a partial table with an error. I/O
// errors are returned as they are, without fallback; content errors of both
// copies give a *BothCopiesError.
func Read(d blockdev.Device) (*Table, error) {
	ss := d.SectorSize()
	if ss < 512 || ss&(ss-1) != 0 {
		return nil, fmt.Errorf("gptprio: unsupported sector size %d", ss)
	}
	sectors := uint64(d.Size()) / uint64(ss)
	if sectors < 3 {
		return nil, &BothCopiesError{
			Primary: &CopyError{"primary", 1, fmt.Sprintf("disk of %d bytes is too small for a GPT", d.Size())},
			Backup:  &CopyError{"backup", 0, "disk too small"},
		}
	}
	pmbr, err := hasProtectiveMBR(d)
	if err != nil {
		return nil, err
	}

	prim, primEntries, primErr := readCopy(d, "primary", 1, sectors)
	if primErr != nil && !isContent(primErr) {
		return nil, primErr
	}
	backupAt := sectors - 1
	if primErr == nil {
		backupAt = prim.altLBA
	}
	back, backEntries, backErr := readCopy(d, "backup", backupAt, sectors)
	if backErr != nil && !isContent(backErr) {
		return nil, backErr
	}

	var t *Table
	switch {
	case primErr == nil:
		t = tableFrom(prim, primEntries, ss)
		t.BackupLBA = prim.altLBA
		if backErr == nil {
			t.BackupEntriesLBA = back.entriesLBA
			t.BackupStale = !sameTable(prim, back) || !bytes.Equal(primEntries, backEntries)
		} else {
			// Rebuild the backup in the standard place, just before its header.
			t.BackupEntriesLBA = prim.altLBA - t.entrySectors()
		}
	case backErr == nil:
		t = tableFrom(back, backEntries, ss)
		t.BackupLBA = back.myLBA
		t.BackupEntriesLBA = back.entriesLBA
		t.EntriesLBA = 2
		t.RecoveredFromBackup = true
		if t.EntriesLBA+t.entrySectors() > t.FirstUsableLBA {
			return nil, &BothCopiesError{Primary: primErr, Backup: &CopyError{"backup", backupAt,
				"its entry array cannot be placed at LBA 2 before the first usable LBA"}}
		}
	default:
		return nil, &BothCopiesError{Primary: primErr, Backup: backErr}
	}
	t.PrimaryProblem, t.BackupProblem = primErr, backErr
	t.ProtectiveMBR = pmbr
	return t, nil
}

func isContent(err error) bool {
	var ce *CopyError
	return errors.As(err, &ce)
}

func sameTable(a, b *header) bool {
	return a.diskGUID == b.diskGUID && a.firstUsable == b.firstUsable && a.lastUsable == b.lastUsable &&
		a.numEntries == b.numEntries && a.entrySize == b.entrySize && a.entriesCRC == b.entriesCRC &&
		a.altLBA == b.myLBA && b.altLBA == a.myLBA
}

func tableFrom(h *header, entries []byte, ss int) *Table {
	t := &Table{
		SectorSize:     ss,
		DiskGUID:       h.diskGUID,
		FirstUsableLBA: h.firstUsable,
		LastUsableLBA:  h.lastUsable,
		EntriesLBA:     h.entriesLBA,
		EntrySize:      int(h.entrySize),
		Partitions:     make([]Partition, h.numEntries),
	}
	for i := range t.Partitions {
		t.Partitions[i] = decodeEntry(entries[i*t.EntrySize:(i+1)*t.EntrySize], i+1)
	}
	return t
}

func decodeEntry(b []byte, number int) Partition {
	p := Partition{Number: number}
	copy(p.Type[:], b[0:16])
	copy(p.ID[:], b[16:32])
	p.FirstLBA = binary.LittleEndian.Uint64(b[32:])
	p.LastLBA = binary.LittleEndian.Uint64(b[40:])
	p.Attributes = Attr(binary.LittleEndian.Uint64(b[48:]))
	copy(p.name[:], b[56:128])
	if len(b) > entrySize {
		p.extra = slices.Clone(b[entrySize:])
	}
	return p
}

func encodeEntry(b []byte, p Partition) {
	copy(b[0:16], p.Type[:])
	copy(b[16:32], p.ID[:])
	binary.LittleEndian.PutUint64(b[32:], p.FirstLBA)
	binary.LittleEndian.PutUint64(b[40:], p.LastLBA)
	binary.LittleEndian.PutUint64(b[48:], uint64(p.Attributes))
	copy(b[56:128], p.name[:])
	copy(b[entrySize:], p.extra)
}

// readCopy reads and validates the header at lba and its entry array.
func readCopy(d blockdev.Device, which string, lba, sectors uint64) (*header, []byte, error) {
	ss := uint64(d.SectorSize())
	bad := func(format string, a ...any) (*header, []byte, error) {
		return nil, nil, &CopyError{Which: which, LBA: lba, Problem: fmt.Sprintf(format, a...)}
	}
	if lba == 0 || lba >= sectors {
		return bad("header location is outside the %d-sector disk", sectors)
	}
	sec := make([]byte, ss)
	if err := readFull(d, sec, int64(lba*ss)); err != nil {
		return nil, nil, fmt.Errorf("reading %s GPT header at LBA %d: %w", which, lba, err)
	}
	if string(sec[:8]) != gptSignature {
		return bad("no %q signature", gptSignature)
	}
	hsize := binary.LittleEndian.Uint32(sec[12:])
	if hsize < headerSize || uint64(hsize) > ss {
		return bad("header size %d is not between %d and the sector size %d", hsize, headerSize, ss)
	}
	stored := binary.LittleEndian.Uint32(sec[16:])
	hb := slices.Clone(sec[:hsize])
	clear(hb[16:20])
	if got := crc32.ChecksumIEEE(hb); got != stored {
		return bad("header CRC32 mismatch (stored 0x%08x, computed 0x%08x)", stored, got)
	}
	h := &header{
		myLBA:       binary.LittleEndian.Uint64(sec[24:]),
		altLBA:      binary.LittleEndian.Uint64(sec[32:]),
		firstUsable: binary.LittleEndian.Uint64(sec[40:]),
		lastUsable:  binary.LittleEndian.Uint64(sec[48:]),
		entriesLBA:  binary.LittleEndian.Uint64(sec[72:]),
		numEntries:  binary.LittleEndian.Uint32(sec[80:]),
		entrySize:   binary.LittleEndian.Uint32(sec[84:]),
		entriesCRC:  binary.LittleEndian.Uint32(sec[88:]),
	}
	copy(h.diskGUID[:], sec[56:72])
	switch {
	case h.myLBA != lba:
		return bad("header says it is at LBA %d", h.myLBA)
	case h.altLBA == 0 || h.altLBA >= sectors || h.altLBA == lba:
		return bad("alternate header LBA %d is not elsewhere on the %d-sector disk", h.altLBA, sectors)
	case h.entrySize < entrySize || h.entrySize&(h.entrySize-1) != 0:
		return bad("entry size %d is not a power of two of at least %d", h.entrySize, entrySize)
	case h.numEntries == 0 || uint64(h.numEntries)*uint64(h.entrySize) > MaxEntryArrayBytes:
		return bad("%d entries of %d bytes is outside the accepted range (1 entry to %d bytes)", h.numEntries, h.entrySize, MaxEntryArrayBytes)
	case h.firstUsable > h.lastUsable+1 || h.lastUsable >= sectors:
		return bad("usable range %d-%d does not fit the %d-sector disk", h.firstUsable, h.lastUsable, sectors)
	}
	esec := ceilDiv(uint64(h.numEntries)*uint64(h.entrySize), ss)
	if h.entriesLBA < 2 || h.entriesLBA+esec > sectors ||
		(h.entriesLBA+esec > h.firstUsable && h.entriesLBA <= h.lastUsable) ||
		(lba >= h.firstUsable && lba <= h.lastUsable) {
		return bad("entry array at LBA %d (%d sectors) or the header overlaps the usable range %d-%d", h.entriesLBA, esec, h.firstUsable, h.lastUsable)
	}
	raw := make([]byte, esec*ss)
	if err := readFull(d, raw, int64(h.entriesLBA*ss)); err != nil {
		return nil, nil, fmt.Errorf("reading %s GPT entries at LBA %d: %w", which, h.entriesLBA, err)
	}
	entries := raw[:uint64(h.numEntries)*uint64(h.entrySize)]
	if got := crc32.ChecksumIEEE(entries); got != h.entriesCRC {
		return bad("partition entry array CRC32 mismatch (stored 0x%08x, computed 0x%08x)", h.entriesCRC, got)
	}
	t := tableFrom(h, entries, int(ss))
	if err := t.checkPartitions(); err != nil {
		return bad("%v", err)
	}
	return h, entries, nil
}

func readFull(d io.ReaderAt, b []byte, off int64) error {
	n, err := d.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// checkPartitions verifies that every used partition lies in the usable
// range and that none overlap.
func (t *Table) checkPartitions() error {
	used := t.Used()
	for _, p := range used {
		if p.FirstLBA > p.LastLBA {
			return fmt.Errorf("partition %d is inverted: its first LBA %d is after its last LBA %d",
				p.Number, p.FirstLBA, p.LastLBA)
		}
		if p.FirstLBA < t.FirstUsableLBA || p.LastLBA > t.LastUsableLBA {
			return fmt.Errorf("partition %d (LBA %d-%d) is outside the usable range %d-%d",
				p.Number, p.FirstLBA, p.LastLBA, t.FirstUsableLBA, t.LastUsableLBA)
		}
	}
	slices.SortFunc(used, func(a, b Partition) int { return cmpU64(a.FirstLBA, b.FirstLBA) })
	for i := 1; i < len(used); i++ {
		if used[i].FirstLBA <= used[i-1].LastLBA {
			return fmt.Errorf("partitions %d and %d overlap", used[i-1].Number, used[i].Number)
		}
	}
	return nil
}

// Validate checks that t can be written: sizes, locations and partitions
// are consistent with each other and with a disk of diskBytes.
func (t *Table) Validate(diskBytes int64) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidTable, fmt.Sprintf(format, a...))
	}
	if t.SectorSize != 512 && t.SectorSize != 4096 {
		return bad("sector size %d", t.SectorSize)
	}
	if t.EntrySize < entrySize || t.EntrySize&(t.EntrySize-1) != 0 || len(t.Partitions) == 0 ||
		len(t.Partitions)*t.EntrySize > MaxEntryArrayBytes {
		return bad("%d entries of %d bytes", len(t.Partitions), t.EntrySize)
	}
	sectors := uint64(diskBytes) / uint64(t.SectorSize)
	es := t.entrySectors()
	switch {
	case t.BackupLBA >= sectors || t.BackupLBA <= t.LastUsableLBA:
		return bad("backup header LBA %d is not after the usable range on a %d-sector disk", t.BackupLBA, sectors)
	case t.EntriesLBA < 2 || t.EntriesLBA+es > t.FirstUsableLBA:
		return bad("primary entries at LBA %d (%d sectors) run into the usable range at %d", t.EntriesLBA, es, t.FirstUsableLBA)
	case t.BackupEntriesLBA <= t.LastUsableLBA || t.BackupEntriesLBA+es > t.BackupLBA:
		return bad("backup entries at LBA %d (%d sectors) do not fit between the usable range end %d and the backup header %d",
			t.BackupEntriesLBA, es, t.LastUsableLBA, t.BackupLBA)
	case t.FirstUsableLBA > t.LastUsableLBA+1:
		return bad("usable range %d-%d", t.FirstUsableLBA, t.LastUsableLBA)
	}
	for i, p := range t.Partitions {
		if p.Number != i+1 {
			return bad("entry %d is numbered %d", i+1, p.Number)
		}
		if len(p.extra) > t.EntrySize-entrySize {
			return bad("entry %d carries more bytes than the entry size", i+1)
		}
	}
	if err := t.checkPartitions(); err != nil {
		return bad("%v", err)
	}
	return nil
}

// encode serializes the entry array and both headers.
func (t *Table) encode() (entries, primary, backup []byte) {
	es := t.entrySectors()
	entries = make([]byte, es*uint64(t.SectorSize))
	for i, p := range t.Partitions {
		encodeEntry(entries[i*t.EntrySize:(i+1)*t.EntrySize], p)
	}
	crc := crc32.ChecksumIEEE(entries[:len(t.Partitions)*t.EntrySize])
	mk := func(my, alt, entriesLBA uint64) []byte {
		h := make([]byte, t.SectorSize)
		copy(h, gptSignature)
		binary.LittleEndian.PutUint32(h[8:], gptRevision)
		binary.LittleEndian.PutUint32(h[12:], headerSize)
		binary.LittleEndian.PutUint64(h[24:], my)
		binary.LittleEndian.PutUint64(h[32:], alt)
		binary.LittleEndian.PutUint64(h[40:], t.FirstUsableLBA)
		binary.LittleEndian.PutUint64(h[48:], t.LastUsableLBA)
		copy(h[56:72], t.DiskGUID[:])
		binary.LittleEndian.PutUint64(h[72:], entriesLBA)
		binary.LittleEndian.PutUint32(h[80:], uint32(len(t.Partitions)))
		binary.LittleEndian.PutUint32(h[84:], uint32(t.EntrySize))
		binary.LittleEndian.PutUint32(h[88:], crc)
		binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h[:headerSize]))
		return h
	}
	return entries, mk(1, t.BackupLBA, t.EntriesLBA), mk(t.BackupLBA, 1, t.BackupEntriesLBA)
}

// Write writes t to d, both copies, crash-safely.
//
// Everything is serialized before the first write. Then, when the table was
// read normally (or is new), the order is:
//
//  0. protective MBR, if LBA 0 has none (boot code bytes 0-439 are kept), Sync
//  1. backup entry array, Sync
//  2. backup header, Sync
//  3. primary entry array, Sync
//  4. primary header, Sync
//
// The possible on-disk states after a power cut, and what Read returns:
//
//   - during 0-2: the primary copy is untouched and valid, so Read returns
//     the OLD table (the backup may be torn or new; it is ignored);
//   - during 3: the backup copy is complete and new; the primary entry
//     array no longer matches its old header's CRC, so Read falls back to
//     the backup and returns the NEW table (or, if no entry byte changed,
//     the primary still validates and holds the new entries: NEW);
//   - during 4: a torn primary header fails its CRC and Read returns the
//     NEW backup; a complete one is NEW.
//
// The commit point is therefore the first primary write that reaches the
// disk: the state seen flips from old to new exactly once, and at every
// instant at least one copy is valid.
//
// When the table was read from the backup (RecoveredFromBackup: the primary
// was damaged), the order is reversed (primary entries, primary header,
// then the backup), for the same reason: the copy that is valid now is
// overwritten last.
//
// Write returns an error wrapping ErrInvalidTable, without writing, if t
// fails Validate.
func Write(d blockdev.Device, t *Table) error {
	if t.SectorSize != d.SectorSize() {
		return fmt.Errorf("%w: table has %d-byte sectors, disk %d", ErrInvalidTable, t.SectorSize, d.SectorSize())
	}
	if err := t.Validate(d.Size()); err != nil {
		return err
	}
	entries, primary, backup := t.encode()
	ss := uint64(t.SectorSize)
	type step struct {
		what string
		lba  uint64
		b    []byte
	}
	var steps []step
	if !t.ProtectiveMBR {
		mbr := make([]byte, t.SectorSize)
		if err := readFull(d, mbr, 0); err != nil {
			return fmt.Errorf("reading MBR: %w", err)
		}
		steps = append(steps, step{"protective MBR", 0, protectiveMBR(mbr, uint64(d.Size())/ss)})
	}
	back := []step{{"backup entry array", t.BackupEntriesLBA, entries}, {"backup header", t.BackupLBA, backup}}
	prim := []step{{"primary entry array", t.EntriesLBA, entries}, {"primary header", 1, primary}}
	if t.RecoveredFromBackup {
		steps = append(append(steps, prim...), back...)
	} else {
		steps = append(append(steps, back...), prim...)
	}
	for _, s := range steps {
		if _, err := d.WriteAt(s.b, int64(s.lba*ss)); err != nil {
			return fmt.Errorf("writing %s at LBA %d: %w", s.what, s.lba, err)
		}
		if err := d.Sync(); err != nil {
			return fmt.Errorf("syncing after writing %s: %w", s.what, err)
		}
		failpoint.Hit("gpt-step")
	}
	t.ProtectiveMBR = true
	t.RecoveredFromBackup, t.BackupStale = false, false
	t.PrimaryProblem, t.BackupProblem = nil, nil
	return nil
}

// hasProtectiveMBR reports whether LBA 0 carries the 0x55AA signature and a
// record of type 0xEE.
func hasProtectiveMBR(d io.ReaderAt) (bool, error) {
	b := make([]byte, 512)
	if err := readFull(d, b, 0); err != nil {
		return false, fmt.Errorf("reading MBR: %w", err)
	}
	if b[510] != 0x55 || b[511] != 0xaa {
		return false, nil
	}
	for i := 0; i < 4; i++ {
		if b[446+16*i+4] == 0xee {
			return true, nil
		}
	}
	return false, nil
}

// protectiveMBR returns sector 0 with a single 0xEE record covering the
// disk, keeping the boot code and disk signature (bytes 0-445) of old.
func protectiveMBR(old []byte, sectors uint64) []byte {
	b := slices.Clone(old)
	clear(b[446:])
	r := b[446:462]
	r[0] = 0x00                             // not bootable
	r[1], r[2], r[3] = 0x00, 0x02, 0x00     // CHS of LBA 1
	r[4] = 0xee                             // GPT protective
	r[5], r[6], r[7] = 0xff, 0xff, 0xff     // CHS end: maximum
	binary.LittleEndian.PutUint32(r[8:], 1) // first LBA
	size := min(sectors-1, 0xffffffff)      // covers the disk, capped
	binary.LittleEndian.PutUint32(r[12:], uint32(size))
	b[510], b[511] = 0x55, 0xaa
	return b
}

func ceilDiv(a, b uint64) uint64 { return (a + b - 1) / b }

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
