package gptprio

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/testutil"
)

// bottlerocketImage rebuilds the 2 GiB Bottlerocket disk label from the
// shared fixture (primary region at 0, backup region at the end) as a
// sparse file, as the fixture's README says.
func bottlerocketImage(t *testing.T, state string) (*blockdev.File, string) {
	t.Helper()
	dir := testutil.Bottlerocket(t, "gpt")
	prim, err := os.ReadFile(filepath.Join(dir, "os-2gib-split-inplace."+state+".primary.bin"))
	if err != nil {
		t.Fatal(err)
	}
	back, err := os.ReadFile(filepath.Join(dir, "os-2gib-split-inplace."+state+".backup.bin"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	const sectors = 4194304
	if err := f.Truncate(sectors * 512); err != nil {
		t.Fatal(err)
	}
	f.WriteAt(prim, 0)
	f.WriteAt(back, (sectors-33)*512)
	f.Close()
	d, err := blockdev.Open(path, blockdev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d, path
}

type layoutJSON struct {
	DiskBytes  int64  `json:"disk_bytes"`
	SectorSize int    `json:"sector_size"`
	DiskGUID   string `json:"disk_guid"`
	Partitions []struct {
		Number     int    `json:"number"`
		Name       string `json:"name"`
		TypeGUID   string `json:"type_guid"`
		UniqueGUID string `json:"unique_guid"`
		FirstLBA   uint64 `json:"first_lba"`
		LastLBA    uint64 `json:"last_lba"`
		Attributes string `json:"attributes_hex"`
	} `json:"partitions"`
}

func TestBottlerocketFixture(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(testutil.Bottlerocket(t, "gpt"), "os-2gib-split-inplace.layout.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want layoutJSON
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	for _, st := range []string{"fresh", "upgrade-pending"} {
		d, _ := bottlerocketImage(t, st)
		tb, err := Read(d)
		if err != nil {
			t.Fatalf("%s: %v", st, err)
		}
		if tb.RecoveredFromBackup || tb.BackupStale || tb.BackupProblem != nil || !tb.ProtectiveMBR {
			t.Errorf("%s: problems reading a clean sgdisk table: %+v", st, tb)
		}
		if tb.DiskGUID.String() != want.DiskGUID {
			t.Errorf("%s: disk GUID %v, want %s", st, tb.DiskGUID, want.DiskGUID)
		}
		used := tb.Used()
		if len(used) != len(want.Partitions) {
			t.Fatalf("%s: %d partitions, want %d", st, len(used), len(want.Partitions))
		}
		for i, w := range want.Partitions {
			p := used[i]
			attrs, _ := strconv.ParseUint(w.Attributes, 16, 64)
			if st == "upgrade-pending" && w.Number == 8 {
				attrs = 0x0012000000000000 // the fixture README: B pending, priority 2, tries 1
			}
			if p.Number != w.Number || p.Name() != w.Name || p.Type.String() != w.TypeGUID ||
				p.ID.String() != w.UniqueGUID || p.FirstLBA != w.FirstLBA || p.LastLBA != w.LastLBA ||
				uint64(p.Attributes) != attrs {
				t.Errorf("%s: partition %d = {%d %q %v %v %d-%d %#x}, want %+v", st, i+1,
					p.Number, p.Name(), p.Type, p.ID, p.FirstLBA, p.LastLBA, uint64(p.Attributes), w)
			}
		}
		l, err := FindLayout(tb)
		if err != nil {
			t.Fatal(err)
		}
		if l.Sets[0] != (SetParts{3, 4, 5}) || l.Sets[1] != (SetParts{8, 9, 10}) || l.Private != 12 {
			t.Errorf("%s: layout %+v", st, l)
		}
		next, _ := Next(tb)
		if wantNext := map[string]Set{"fresh": SetA, "upgrade-pending": SetB}[st]; next != wantNext {
			t.Errorf("%s: next = %v, want %v", st, next, wantNext)
		}
	}
}

// TestBottlerocketUpgradeMatchesFixture performs updog's boot-state steps on
// the fresh fixture and compares the resulting table bytes with the
// upgrade-pending fixture, which sgdisk wrote.
func TestBottlerocketUpgradeMatchesFixture(t *testing.T) {
	d, _ := bottlerocketImage(t, "fresh")
	tb, err := Read(d)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []func(*Table, Set) (*Table, error){
		ClearInactive,
		func(tb *Table, s Set) (*Table, error) { return MarkInactiveValid(tb, s, 1) },
		UpgradeToInactive,
	} {
		if tb, err = f(tb, SetA); err != nil {
			t.Fatal(err)
		}
	}
	if err := Write(d, tb); err != nil {
		t.Fatal(err)
	}
	dir := testutil.Bottlerocket(t, "gpt")
	for _, c := range []struct {
		file string
		off  int64
	}{{"upgrade-pending.primary.bin", 512}, {"upgrade-pending.backup.bin", (4194304 - 33) * 512}} {
		want, _ := os.ReadFile(filepath.Join(dir, "os-2gib-split-inplace."+c.file))
		if c.off == 512 {
			want = want[512:] // LBA 0 (MBR) is not ours to compare
		}
		got := make([]byte, len(want))
		d.ReadAt(got, c.off)
		if string(got) != string(want) {
			t.Errorf("%s: our bytes differ from sgdisk's", c.file)
		}
	}
}
