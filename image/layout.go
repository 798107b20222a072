package image

import (
	"fmt"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/blockdev"
)

const mib = 1 << 20

// PartSpec is one partition of a plan.
type PartSpec struct {
	Name  string
	Type  gptprio.GUID
	Bytes int64
	Attr  gptprio.Attr
}

// Partition types Bottlerocket uses besides those gptprio knows.
var (
	TypeReserved  = gptprio.MustParseGUID("0c5d99a5-d331-4147-baef-08e2b855bdc9")
	TypeEFIBackup = gptprio.MustParseGUID("b39ce39c-0a00-b4ab-2d11-f18f8237a21c")
	// TypeMarker is the 1 MiB BOTTLEROCKET marker partition at the end of
	// the OS disk.
	TypeMarker = gptprio.MustParseGUID("626f7474-6c65-6474-6861-726d61726b73")
)

// Bottlerocket's fixed partition sizes (twoliter partyplanner, in-place
// updates, split data disk), in MiB.
const (
	biosMiB, efiMiB, bootMiB, hashMiB, reservedMiB, privateMiB, markerMiB = 4, 5, 40, 10, 25, 41, 1
	// alignMiB is the gap before the first partition; the same is left at
	// the end for the backup GPT.
	alignMiB = 1
	fixedMiB = 2*alignMiB + biosMiB + 2*efiMiB + 2*(bootMiB+hashMiB+reservedMiB) + privateMiB + markerMiB
)

// BottlerocketPlan returns the A/B OS disk plan Bottlerocket uses for a disk
// of diskBytes: BIOS-BOOT, EFI-SYSTEM, BOOT/ROOT/HASH/RESERVED-A, EFI-BACKUP,
// BOOT/ROOT/HASH/RESERVED-B, PRIVATE and the marker, with the two ROOT
// partitions sharing what is left. For a 2 GiB disk this is exactly the
// layout of Bottlerocket's 2 GiB image (ROOT = 920 MiB). Set A is marked as
// a fresh build marks it: priority 1, successful.
//
// Past about 2.8 GiB the ROOT partitions are larger than the dm-verity hash
// tree a 10 MiB HASH partition holds (about 1.27 GiB of data with 4096-byte
// blocks and sha256); the HASH partitions then grow, in whole MiB, to hold
// the tree of a full ROOT partition, and ROOT shrinks by as much.
func BottlerocketPlan(diskBytes int64) ([]PartSpec, error) {
	rootMiB := (diskBytes/mib - fixedMiB) / 2
	if rootMiB < 1 {
		return nil, fmt.Errorf("image: a %d-byte disk is too small for the Bottlerocket layout (needs more than %d MiB)", diskBytes, fixedMiB)
	}
	setHashMiB := int64(hashMiB)
	for HashTreeBytes(rootMiB*mib) > setHashMiB*mib {
		setHashMiB++
		rootMiB--
	}
	m := func(n int64) int64 { return n * mib }
	set := func(s string) []PartSpec {
		return []PartSpec{
			{Name: "BOTTLEROCKET-BOOT-" + s, Type: gptprio.TypeBoot, Bytes: m(bootMiB)},
			{Name: "BOTTLEROCKET-ROOT-" + s, Type: gptprio.TypeRoot, Bytes: m(rootMiB)},
			{Name: "BOTTLEROCKET-HASH-" + s, Type: gptprio.TypeHash, Bytes: m(setHashMiB)},
			{Name: "BOTTLEROCKET-RESERVED-" + s, Type: TypeReserved, Bytes: m(reservedMiB)},
		}
	}
	plan := []PartSpec{
		{Name: "BIOS-BOOT", Type: gptprio.TypeBIOS, Bytes: m(biosMiB)},
		{Name: "EFI-SYSTEM", Type: gptprio.TypeEFI, Bytes: m(efiMiB)},
	}
	plan = append(plan, set("A")...)
	plan = append(plan, PartSpec{Name: "EFI-BACKUP", Type: TypeEFIBackup, Bytes: m(efiMiB)})
	plan = append(plan, set("B")...)
	plan = append(plan,
		PartSpec{Name: "BOTTLEROCKET-PRIVATE", Type: gptprio.TypePrivate, Bytes: m(privateMiB)},
		PartSpec{Name: "", Type: TypeMarker, Bytes: m(markerMiB)})
	plan[2].Attr = gptprio.Attr(0).WithPriority(1).WithSuccessful(true)
	return plan, nil
}

// HashTreeBytes is the size of the hash image (superblock and tree) that
// veritysetup's defaults (sha256, 4096-byte data and hash blocks, a
// superblock) give for dataBytes of data: what a HASH partition must hold.
func HashTreeBytes(dataBytes int64) int64 {
	const block, perBlock = 4096, 4096 / 32
	n := (dataBytes + block - 1) / block
	blocks := int64(1) // the superblock
	for n > 1 {
		n = (n + perBlock - 1) / perBlock
		blocks += n
	}
	return blocks * block
}

// PartitionID returns the unique partition GUID CreateDisk gives partition
// n (1-based) of a disk: derived from the disk GUID so builds are
// reproducible.
func PartitionID(disk gptprio.GUID, n int) gptprio.GUID {
	id := disk
	id[15] ^= byte(n)
	id[14] ^= byte(n >> 8)
	id[7] = id[7]&0x0f | 0x40 // version 4 layout bits, as random GUIDs have
	return id
}

// NewTable lays plan out in a new GPT for a disk of diskBytes bytes with
// the given sector size, partitions packed from 1 MiB on. It is pure: the
// table is written by the caller (gptprio.Disk.Format for a disk others
// may see, or CreateDisk). The disk must be a whole number of sectors and
// the disk GUID not all zeros.
func NewTable(diskBytes int64, sectorSize int, plan []PartSpec, diskGUID gptprio.GUID) (*gptprio.Table, error) {
	t, err := gptprio.New(diskBytes, sectorSize, diskGUID)
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	if len(plan) > len(t.Partitions) {
		return nil, fmt.Errorf("image: %d partitions do not fit a %d-entry table", len(plan), len(t.Partitions))
	}
	ss := uint64(sectorSize)
	lba := uint64(alignMiB*mib) / ss
	for i, p := range plan {
		if p.Bytes <= 0 || uint64(p.Bytes)%ss != 0 {
			return nil, fmt.Errorf("image: partition %s: size %d is not a positive multiple of the sector size", p.Name, p.Bytes)
		}
		e := &t.Partitions[i]
		e.Type, e.ID, e.Attributes = p.Type, PartitionID(diskGUID, i+1), p.Attr
		e.FirstLBA = lba
		e.LastLBA = lba + uint64(p.Bytes)/ss - 1
		if e.LastLBA > t.LastUsableLBA {
			return nil, fmt.Errorf("image: partition %s ends at LBA %d, past the last usable LBA %d of a %d-byte disk",
				p.Name, e.LastLBA, t.LastUsableLBA, diskBytes)
		}
		if err := e.SetName(p.Name); err != nil {
			return nil, err
		}
		lba = e.LastLBA + 1
	}
	if err := t.Validate(diskBytes); err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	return t, nil
}

// CreateDisk writes a new GPT holding plan to d (see NewTable) and returns
// it. Everything else on d is left as it is. It takes no lock: it is for a
// device no other process can see (an in-memory disk, a file just
// created); a disk others may open is formatted with gptprio.Disk.Format.
func CreateDisk(d blockdev.Device, plan []PartSpec, diskGUID gptprio.GUID) (*gptprio.Table, error) {
	t, err := NewTable(d.Size(), d.SectorSize(), plan, diskGUID)
	if err != nil {
		return nil, err
	}
	if err := gptprio.Write(d, t); err != nil {
		return nil, err
	}
	return t, nil
}
