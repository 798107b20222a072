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
	// ID, when not zero, is the partition's unique GUID; else NewTable
	// derives one from the disk GUID (PartitionID).
	ID gptprio.GUID
}

// Partition types Bottlerocket uses besides those gptprio knows.
var (
	TypeReserved  = gptprio.MustParseGUID("0c5d99a5-d331-4147-baef-08e2b855bdc9")
	TypeEFIBackup = gptprio.MustParseGUID("b39ce39c-0a00-b4ab-2d11-f18f8237a21c")
	// TypeData is Bottlerocket's DATA partition type
	// (BOTTLEROCKET_DATA_TYPECODE in twoliter's partyplanner): the DATA
	// partition at the end of a unified disk, and the 1 MiB DATA-A
	// placeholder at the end of a split plan's OS disk.
	TypeData = gptprio.MustParseGUID("626f7474-6c65-6474-6861-726d61726b73")
	// DataPartitionID is the unique GUID Bottlerocket gives the DATA
	// partition of a unified disk (BOTTLEROCKET_DATA_PREFERRED_PARTGUID):
	// the same on every disk, it is how the host finds its DATA.
	DataPartitionID = gptprio.MustParseGUID("5b94e8df-28b8-485c-9d19-362263b5944c")
)

// DataLabel is the DATA partition's name on a unified disk. Bottlerocket's
// image builder leaves it empty and the host names its DATA partition
// BOTTLEROCKET-DATA at boot; nothing of ours does that at boot, so the
// image carries the name.
const DataLabel = "BOTTLEROCKET-DATA"

// PartitionPlan is one of Bottlerocket's partition plans (partyplanner's
// partition_plan): where the DATA partition is.
type PartitionPlan string

const (
	// PlanSplit is the OS disk of a host whose DATA is on a second disk:
	// the OS disk ends with a 1 MiB DATA-A placeholder (no name).
	PlanSplit PartitionPlan = "split"
	// PlanUnified is one disk holding both: DATA, a sixteenth of the disk,
	// follows PRIVATE at the end of the disk.
	PlanUnified PartitionPlan = "unified"
)

// ParsePartitionPlan reads "unified" or "split".
func ParsePartitionPlan(s string) (PartitionPlan, error) {
	switch p := PartitionPlan(s); p {
	case PlanUnified, PlanSplit:
		return p, nil
	}
	return "", fmt.Errorf("image: partition plan %q (want unified or split)", s)
}

// Bottlerocket's fixed partition sizes (twoliter partyplanner, in-place
// updates, split data disk), in MiB.
const (
	biosMiB, efiMiB, bootMiB, hashMiB, reservedMiB, privateMiB, markerMiB = 4, 5, 40, 10, 25, 41, 1
	// alignMiB is the gap before the first partition; the same is left at
	// the end for the backup GPT.
	alignMiB = 1
	// osFixedMiB is what the GPT gaps and every partition but ROOT and
	// DATA take.
	osFixedMiB = 2*alignMiB + biosMiB + 2*efiMiB + 2*(bootMiB+hashMiB+reservedMiB) + privateMiB
	// dataShare: a unified disk's DATA partition is 1/dataShare of it (the
	// rest of the plan scales as the split plan does). A small DATA suits
	// an image: Bottlerocket grows DATA to fill the host's real disk.
	dataShare = 16
)

// BottlerocketPlan returns the A/B OS disk plan Bottlerocket uses for a disk
// of diskBytes: BIOS-BOOT, EFI-SYSTEM, BOOT/ROOT/HASH/RESERVED-A, EFI-BACKUP,
// BOOT/ROOT/HASH/RESERVED-B, PRIVATE and the marker, with the two ROOT
// partitions sharing what is left. For a 2 GiB disk this is exactly the
// layout of Bottlerocket's 2 GiB image (ROOT = 920 MiB). Set A is marked as
// a fresh build marks it: priority 1, successful. It is the split plan:
// BottlerocketPlanFor(diskBytes, PlanSplit).
//
// Past about 2.8 GiB the ROOT partitions are larger than the dm-verity hash
// tree a 10 MiB HASH partition holds (about 1.27 GiB of data with 4096-byte
// blocks and sha256); the HASH partitions then grow, in whole MiB, to hold
// the tree of a full ROOT partition, and ROOT shrinks by as much.
func BottlerocketPlan(diskBytes int64) ([]PartSpec, error) {
	return BottlerocketPlanFor(diskBytes, PlanSplit)
}

// BottlerocketPlanFor returns Bottlerocket's plan pp for a disk of
// diskBytes. PlanSplit is BottlerocketPlan. PlanUnified has the same
// partitions up to PRIVATE, then, instead of the 1 MiB placeholder, the
// DATA partition: type TypeData, name DataLabel, unique GUID
// DataPartitionID, a sixteenth of the disk (in whole MiB, plus what the
// ROOT partitions' halving leaves over) and ending where the split plan's
// placeholder ends, 1 MiB before the end of the disk. The ROOT partitions
// share what DATA and the fixed partitions leave.
func BottlerocketPlanFor(diskBytes int64, pp PartitionPlan) ([]PartSpec, error) {
	diskMiB := diskBytes / mib
	var dataMiB int64
	switch pp {
	case PlanSplit:
		dataMiB = markerMiB
	case PlanUnified:
		dataMiB = diskMiB / dataShare
	default:
		return nil, fmt.Errorf("image: partition plan %q (want unified or split)", pp)
	}
	rootMiB := (diskMiB - osFixedMiB - dataMiB) / 2
	if rootMiB < 1 {
		return nil, fmt.Errorf("image: a %d-byte disk is too small for Bottlerocket's %s layout (it needs more than %d MiB: %d MiB for the GPTs and the fixed partitions, %d MiB for DATA, and two ROOT partitions)",
			diskBytes, pp, osFixedMiB+dataMiB+1, osFixedMiB, dataMiB)
	}
	if pp == PlanUnified {
		// DATA ends 1 MiB before the end of the disk, as the split plan's
		// placeholder does.
		dataMiB = diskMiB - osFixedMiB - 2*rootMiB
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
	plan = append(plan, PartSpec{Name: "BOTTLEROCKET-PRIVATE", Type: gptprio.TypePrivate, Bytes: m(privateMiB)})
	if pp == PlanUnified {
		plan = append(plan, PartSpec{Name: DataLabel, Type: TypeData, Bytes: m(dataMiB), ID: DataPartitionID})
	} else {
		plan = append(plan, PartSpec{Name: "", Type: TypeData, Bytes: m(markerMiB)})
	}
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
		if !p.ID.IsZero() {
			e.ID = p.ID
		}
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

// DefaultESPBytes is the EFI system partition of the plans: Bottlerocket's
// 5 MiB, room for a GRUB image only. UEFIESPBytes is what a UEFI-bootable
// build asks for by default: stage one's kernel and initramfs (a Debian
// kernel and bootsel's initramfs, about 10 and 5 MiB today) and GRUB, with
// room for both to grow, since updates never rewrite the ESP.
const (
	DefaultESPBytes = efiMiB * mib
	UEFIESPBytes    = 64 * mib
)

// WithESPSize returns a copy of plan whose EFI-SYSTEM partition holds at
// least espBytes (whole MiB): the two ROOT partitions each give up half of
// the growth, in whole MiB, so everything after them ends where it did;
// when the growth is an odd number of MiB, the ESP keeps the extra MiB.
// Every release of a variant must be built with the same ESP size, as with
// the same disk size: it sets the ROOT partitions' size. A smaller ESP than
// the plan's is refused.
func WithESPSize(plan []PartSpec, espBytes int64) ([]PartSpec, error) {
	out := append([]PartSpec(nil), plan...)
	esp, roots := -1, []int{}
	for i, p := range out {
		switch p.Type {
		case gptprio.TypeEFI:
			esp = i
		case gptprio.TypeRoot:
			roots = append(roots, i)
		}
	}
	if esp < 0 || len(roots) != 2 {
		return nil, fmt.Errorf("image: the plan has no EFI system partition or not two ROOT partitions")
	}
	if espBytes%mib != 0 || espBytes < out[esp].Bytes {
		return nil, fmt.Errorf("image: an EFI system partition of %d bytes: want whole MiB, at least %d MiB", espBytes, out[esp].Bytes/mib)
	}
	grow := (espBytes - out[esp].Bytes) / mib
	each := (grow + 1) / 2
	for _, i := range roots {
		if out[i].Bytes-each*mib < mib {
			return nil, fmt.Errorf("image: the disk is too small for a %d MiB EFI system partition: the ROOT partitions (%d MiB) would have to give up %d MiB each",
				espBytes/mib, out[i].Bytes/mib, each)
		}
		out[i].Bytes -= each * mib
	}
	out[esp].Bytes += 2 * each * mib
	return out, nil
}
