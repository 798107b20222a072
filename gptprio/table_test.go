package gptprio

import (
	"errors"
	"strings"
	"testing"

	"github.com/updog/updog/internal/disktest"
)

const mib = 1 << 20

// part is a partition to lay out in tests: type, name and size in MiB.
type part struct {
	typ  GUID
	name string
	mib  uint64
}

// abParts is a small A/B layout in Bottlerocket's order.
var abParts = []part{
	{TypeBIOS, "BIOS-BOOT", 1},
	{TypeEFI, "EFI-SYSTEM", 1},
	{TypeBoot, "BOTTLEROCKET-BOOT-A", 2},
	{TypeRoot, "BOTTLEROCKET-ROOT-A", 8},
	{TypeHash, "BOTTLEROCKET-HASH-A", 1},
	{TypeBoot, "BOTTLEROCKET-BOOT-B", 2},
	{TypeRoot, "BOTTLEROCKET-ROOT-B", 8},
	{TypeHash, "BOTTLEROCKET-HASH-B", 1},
	{TypePrivate, "BOTTLEROCKET-PRIVATE", 1},
}

// layoutTable lays parts out from 1 MiB on a disk of diskMiB MiB.
func layoutTable(t testing.TB, diskMiB int64, ss int, parts []part) *Table {
	t.Helper()
	tb, err := New(diskMiB*mib, ss, MustParseGUID("11111111-2222-4333-8444-555555555555"))
	if err != nil {
		t.Fatal(err)
	}
	lba := uint64(mib / ss)
	for i, p := range parts {
		e := &tb.Partitions[i]
		e.Type = p.typ
		e.ID = GUID{0: byte(i + 1), 15: 0x42}
		e.FirstLBA = lba
		e.LastLBA = lba + p.mib*mib/uint64(ss) - 1
		if err := e.SetName(p.name); err != nil {
			t.Fatal(err)
		}
		lba = e.LastLBA + 1
	}
	// A fresh build: set A priority 1, successful.
	tb.Partitions[2].Attributes = Attr(0).WithPriority(1).WithSuccessful(true)
	return tb
}

// freshDisk returns an in-memory disk holding the A/B layout.
func freshDisk(t testing.TB, ss int) *disktest.Mem {
	t.Helper()
	d := disktest.New(64*mib, ss)
	if err := Write(d, layoutTable(t, 64, ss, abParts)); err != nil {
		t.Fatal(err)
	}
	d.ResetLog()
	return d
}

func mustRead(t testing.TB, d *disktest.Mem) *Table {
	t.Helper()
	tb, err := Read(d)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// sameContent compares what a table says, ignoring the read diagnostics.
func sameContent(a, b *Table) bool {
	a, b = a.Clone(), b.Clone()
	for _, x := range []*Table{a, b} {
		x.RecoveredFromBackup, x.BackupStale, x.ProtectiveMBR = false, false, false
		x.PrimaryProblem, x.BackupProblem = nil, nil
	}
	if len(a.Partitions) != len(b.Partitions) {
		return false
	}
	for i := range a.Partitions {
		pa, pb := a.Partitions[i], b.Partitions[i]
		if pa.Type != pb.Type || pa.ID != pb.ID || pa.FirstLBA != pb.FirstLBA || pa.LastLBA != pb.LastLBA ||
			pa.Attributes != pb.Attributes || pa.name != pb.name || string(pa.extra) != string(pb.extra) {
			return false
		}
	}
	return a.SectorSize == b.SectorSize && a.DiskGUID == b.DiskGUID && a.FirstUsableLBA == b.FirstUsableLBA &&
		a.LastUsableLBA == b.LastUsableLBA && a.BackupLBA == b.BackupLBA && a.EntrySize == b.EntrySize
}

func TestRoundTrip(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		want := layoutTable(t, 64, ss, abParts)
		d := disktest.New(64*mib, ss)
		if err := Write(d, want); err != nil {
			t.Fatal(err)
		}
		got := mustRead(t, d)
		if !sameContent(got, want) {
			t.Fatalf("%d-byte sectors: read back differs:\n got %+v\nwant %+v", ss, got, want)
		}
		if got.RecoveredFromBackup || got.BackupStale || got.PrimaryProblem != nil || got.BackupProblem != nil || !got.ProtectiveMBR {
			t.Errorf("%d: fresh table reports problems: %+v", ss, got)
		}
		if n := got.Partition(4).Name(); n != "BOTTLEROCKET-ROOT-A" {
			t.Errorf("partition 4 name %q", n)
		}
		if got.BackupLBA != uint64(64*mib/ss-1) {
			t.Errorf("backup header at %d, want last LBA", got.BackupLBA)
		}
	}
}

func TestWriteOrderAndSyncs(t *testing.T) {
	d := freshDisk(t, 512)
	tb := mustRead(t, d)
	if err := Write(d, tb); err != nil {
		t.Fatal(err)
	}
	log := d.Log()
	// backup entries, sync, backup header, sync, primary entries, sync, primary header, sync
	wantOffsets := []int64{int64(tb.BackupEntriesLBA) * 512, int64(tb.BackupLBA) * 512, 2 * 512, 512}
	if len(log) != 8 {
		t.Fatalf("got %d operations, want 8: %v", len(log), log)
	}
	for i, off := range wantOffsets {
		if log[2*i].Kind != disktest.OpWrite || log[2*i].Off != off || log[2*i+1].Kind != disktest.OpSync {
			t.Fatalf("operation %d: %v then %v, want write at %d then sync", 2*i, log[2*i], log[2*i+1], off)
		}
	}
}

func corruptPrimaryHeader(t testing.TB, d *disktest.Mem) {
	t.Helper()
	b := make([]byte, 1)
	d.ReadAt(b, int64(d.SectorSize())+20)
	b[0] ^= 0xff
	d.WriteAt(b, int64(d.SectorSize())+20)
}

func TestPrimaryDamagedFallsBackAndRepairs(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		d := freshDisk(t, ss)
		want := mustRead(t, d)
		corruptPrimaryHeader(t, d)
		got := mustRead(t, d)
		if !got.RecoveredFromBackup {
			t.Fatalf("%d: RecoveredFromBackup not set", ss)
		}
		var ce *CopyError
		if !errors.As(got.PrimaryProblem, &ce) || ce.Which != "primary" {
			t.Fatalf("%d: PrimaryProblem = %v", ss, got.PrimaryProblem)
		}
		if !sameContent(got, want) {
			t.Fatalf("%d: backup content differs from primary", ss)
		}
		d.ResetLog()
		if err := Write(d, got); err != nil {
			t.Fatal(err)
		}
		// Repair order: primary first, because it is the damaged copy.
		if first := d.Log()[0]; first.Off != int64(ss)*2 {
			t.Errorf("%d: first write at %d, want the primary entries", ss, first.Off)
		}
		fixed := mustRead(t, d)
		if fixed.RecoveredFromBackup || fixed.PrimaryProblem != nil || fixed.BackupStale {
			t.Fatalf("%d: not repaired: %+v", ss, fixed)
		}
	}
}

func TestPrimaryEntriesDamaged(t *testing.T) {
	d := freshDisk(t, 512)
	d.WriteAt([]byte{0xde, 0xad}, 2*512+100)
	got := mustRead(t, d)
	if !got.RecoveredFromBackup {
		t.Fatal("a damaged primary entry array was not noticed")
	}
}

func TestBackupDamagedIsReported(t *testing.T) {
	d := freshDisk(t, 512)
	d.WriteAt(make([]byte, 512), d.Size()-512)
	got := mustRead(t, d)
	if got.RecoveredFromBackup || got.BackupProblem == nil {
		t.Fatalf("backup damage not reported: %+v", got)
	}
	if err := Write(d, got); err != nil {
		t.Fatal(err)
	}
	if again := mustRead(t, d); again.BackupProblem != nil {
		t.Fatalf("backup not repaired: %v", again.BackupProblem)
	}
}

func TestBothDamagedWritesNothing(t *testing.T) {
	d := freshDisk(t, 512)
	corruptPrimaryHeader(t, d)
	d.WriteAt([]byte("garbage!"), d.Size()-512)
	d.ResetLog()
	_, err := Read(d)
	if !errors.Is(err, ErrNoValidTable) {
		t.Fatalf("err = %v, want ErrNoValidTable", err)
	}
	var both *BothCopiesError
	if !errors.As(err, &both) || both.Primary == nil || both.Backup == nil {
		t.Fatalf("err = %#v, want both causes", err)
	}
	if n := d.Writes(); n != 0 {
		t.Fatalf("%d writes after a failed read", n)
	}
}

func TestIOErrorPropagates(t *testing.T) {
	d := freshDisk(t, 512)
	d.FailOffset(512 + 8)
	_, err := Read(d)
	if !errors.Is(err, disktest.ErrInjected) {
		t.Fatalf("err = %v, want the injected I/O error, not a fallback", err)
	}
}

func TestWriteErrorLeavesReadableTable(t *testing.T) {
	// Fail each of the eight operations of a write in turn: the table must
	// still read back, as the old or the new state.
	for n := 0; n < 8; n++ {
		d := freshDisk(t, 512)
		old := mustRead(t, d)
		nt, err := UpgradeToInactive(mustMarkValid(t, old), SetA)
		if err != nil {
			t.Fatal(err)
		}
		d.ResetLog()
		d.FailAt(n, nil)
		if err := Write(d, nt); !errors.Is(err, disktest.ErrInjected) {
			t.Fatalf("op %d: err = %v", n, err)
		}
		got := mustRead(t, d)
		if !sameContent(got, old) && !sameContent(got, nt) {
			t.Fatalf("op %d failed: table is neither old nor new", n)
		}
	}
}

func mustMarkValid(t testing.TB, tb *Table) *Table {
	t.Helper()
	nt, err := MarkInactiveValid(tb, SetA, 1)
	if err != nil {
		t.Fatal(err)
	}
	return nt
}

func TestValidateRefuses(t *testing.T) {
	tb := layoutTable(t, 64, 512, abParts)
	over := tb.Clone()
	over.Partitions[1].FirstLBA = over.Partitions[0].LastLBA // overlap
	outside := tb.Clone()
	outside.Partitions[0].LastLBA = outside.LastUsableLBA + 1
	for name, bad := range map[string]*Table{"overlap": over, "outside": outside} {
		d := disktest.New(64*mib, 512)
		if err := Write(d, bad); !errors.Is(err, ErrInvalidTable) {
			t.Errorf("%s: err = %v, want ErrInvalidTable", name, err)
		}
		if d.Writes() != 0 {
			t.Errorf("%s: wrote despite an invalid table", name)
		}
	}
}

func TestKeepsUnknownBitsAndEntries(t *testing.T) {
	d := freshDisk(t, 512)
	tb := mustRead(t, d)
	tb.Partitions[5].Attributes = 0xffff_ffff_ffff_0001 // BOOT-B: every bit set but ours varies
	tb.Partitions[0].Attributes = 1 << 2                // legacy BIOS bootable
	if err := Write(d, tb); err != nil {
		t.Fatal(err)
	}
	nt, err := ClearInactive(mustRead(t, d), SetA)
	if err != nil {
		t.Fatal(err)
	}
	if got := nt.Partitions[5].Attributes; got != 0xfe00_ffff_ffff_0001 {
		t.Errorf("ClearInactive: attributes 0x%016x, want only bits 48-56 cleared", uint64(got))
	}
	if nt.Partitions[0].Attributes != 1<<2 {
		t.Error("an unrelated partition's attributes changed")
	}
}

func TestProtectiveMBRKeepsBootCode(t *testing.T) {
	tb := layoutTable(t, 64, 512, abParts)
	d := disktest.New(64*mib, 512)
	code := []byte("GRUB boot code here")
	d.WriteAt(code, 0)
	if err := Write(d, tb); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 512)
	d.ReadAt(got, 0)
	if string(got[:len(code)]) != string(code) {
		t.Error("boot code was overwritten")
	}
	if got[446+4] != 0xee || got[510] != 0x55 || got[511] != 0xaa {
		t.Errorf("no protective record: % x", got[446:])
	}
	// A table read from a disk that has one leaves LBA 0 alone.
	d.ResetLog()
	if err := Write(d, mustRead(t, d)); err != nil {
		t.Fatal(err)
	}
	for _, op := range d.Log() {
		if op.Kind == disktest.OpWrite && op.Off == 0 {
			t.Error("rewrote LBA 0 although it already held a protective MBR")
		}
	}
}

func TestGUIDText(t *testing.T) {
	if string(TypeBoot[:]) != "hack the planet!" {
		t.Errorf("BOOT type GUID bytes %q", TypeBoot[:])
	}
	if s := TypeEFI.String(); s != "c12a7328-f81f-11d2-ba4b-00a0c93ec93b" {
		t.Errorf("EFI GUID text %s", s)
	}
	if _, err := ParseGUID("not-a-guid"); err == nil {
		t.Error("ParseGUID accepted junk")
	}
}

// TestInvertedPartitionSaysSo: a partition whose first LBA is after its
// last is reported as inverted, not as "outside the usable range".
func TestInvertedPartitionSaysSo(t *testing.T) {
	tb := layoutTable(t, 64, 512, abParts)
	p := &tb.Partitions[3]
	p.FirstLBA, p.LastLBA = p.LastLBA, p.FirstLBA
	err := tb.Validate(64 * mib)
	if !errors.Is(err, ErrInvalidTable) || !strings.Contains(err.Error(), "partition 4 is inverted") ||
		strings.Contains(err.Error(), "outside") {
		t.Fatalf("inverted partition: %v", err)
	}
}

func TestNewRefusesZeroGUIDAndPartialSectors(t *testing.T) {
	if _, err := New(64*mib, 512, GUID{}); !errors.Is(err, ErrInvalidTable) {
		t.Errorf("zero disk GUID: %v", err)
	}
	if _, err := New(64*mib+100, 512, GUID{1}); !errors.Is(err, ErrInvalidTable) {
		t.Errorf("size not a multiple of the sector size: %v", err)
	}
	if _, err := New(64*mib+512, 4096, GUID{1}); !errors.Is(err, ErrInvalidTable) {
		t.Errorf("size not a multiple of 4096: %v", err)
	}
	if _, err := New(64*mib, 4096, GUID{1}); err != nil {
		t.Errorf("a good table: %v", err)
	}
}
