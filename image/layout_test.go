package image

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/disktest"
	"github.com/updog/updog/internal/testutil"
	"github.com/updog/updog/verity"
)

// TestBottlerocketPlanMatchesFixture lays out a 2 GiB disk and compares
// every partition's name, type, bounds and attributes with the layout of
// Bottlerocket's own 2 GiB image.
func TestBottlerocketPlanMatchesFixture(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(testutil.Bottlerocket(t, "gpt"), "os-2gib-split-inplace.layout.json"))
	if err != nil {
		t.Fatal(err)
	}
	var want struct {
		Partitions []struct {
			Number   int    `json:"number"`
			Name     string `json:"name"`
			TypeGUID string `json:"type_guid"`
			FirstLBA uint64 `json:"first_lba"`
			LastLBA  uint64 `json:"last_lba"`
			Attr     string `json:"attributes_hex"`
		} `json:"partitions"`
	}
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	plan, err := BottlerocketPlan(2 << 30)
	if err != nil {
		t.Fatal(err)
	}
	d := disktest.New(2<<30, 512)
	tb, err := CreateDisk(d, plan, gptprio.GUID{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	used := tb.Used()
	if len(used) != len(want.Partitions) {
		t.Fatalf("%d partitions, want %d", len(used), len(want.Partitions))
	}
	for i, w := range want.Partitions {
		p := used[i]
		raw, err := strconv.ParseUint(strings.TrimPrefix(w.Attr, "0x"), 16, 64)
		if err != nil {
			t.Fatalf("partition %d: attributes %q: %v", w.Number, w.Attr, err)
		}
		attr := gptprio.Attr(raw)
		if p.Number != w.Number || p.Name() != w.Name || p.Type.String() != w.TypeGUID ||
			p.FirstLBA != w.FirstLBA || p.LastLBA != w.LastLBA || p.Attributes != attr {
			t.Errorf("partition %d: {%d %q %v %d-%d %v}, want %+v", i+1, p.Number, p.Name(), p.Type, p.FirstLBA, p.LastLBA, p.Attributes, w)
		}
	}
	again, err := gptprio.Read(d)
	if err != nil || again.RecoveredFromBackup || again.BackupStale {
		t.Fatalf("read back: %v %+v", err, again)
	}
}

func TestPlanTooSmall(t *testing.T) {
	if _, err := BottlerocketPlan(100 << 20); err == nil {
		t.Fatal("a 100 MiB disk was accepted")
	}
	plan, _ := BottlerocketPlan(512 << 20)
	d := disktest.New(512<<20, 4096)
	if _, err := CreateDisk(d, plan, gptprio.GUID{9}); err != nil {
		t.Fatalf("4096-byte sectors: %v", err)
	}
}

func TestNewTableRefuses(t *testing.T) {
	plan, _ := BottlerocketPlan(512 << 20)
	if _, err := NewTable(512<<20, 512, plan, gptprio.GUID{}); !errors.Is(err, gptprio.ErrInvalidTable) {
		t.Errorf("all-zero disk GUID: %v", err)
	}
	if _, err := NewTable(512<<20+100, 512, plan, gptprio.GUID{1}); !errors.Is(err, gptprio.ErrInvalidTable) {
		t.Errorf("a size that is not a whole number of sectors: %v", err)
	}
	if _, err := NewTable(512<<20, 4096, plan, gptprio.GUID{1}); err != nil {
		t.Errorf("a good disk: %v", err)
	}
}

// TestPlanHashGrows: past the size a 10 MiB HASH partition covers, HASH
// grows to hold the tree of a full ROOT partition; below it, the plan keeps
// Bottlerocket's 10 MiB.
func TestPlanHashGrows(t *testing.T) {
	for _, size := range []int64{2 << 30, 3 << 30, 8 << 30, 64 << 30} {
		plan, err := BottlerocketPlan(size)
		if err != nil {
			t.Fatal(err)
		}
		var root, hash, total int64
		for _, p := range plan {
			total += p.Bytes
			switch p.Name {
			case "BOTTLEROCKET-ROOT-A":
				root = p.Bytes
			case "BOTTLEROCKET-HASH-A":
				hash = p.Bytes
			}
		}
		if HashTreeBytes(root) > hash {
			t.Errorf("%d: a %d-byte root needs %d bytes of tree, HASH has %d", size, root, HashTreeBytes(root), hash)
		}
		if size <= 2<<30 && hash != 10<<20 {
			t.Errorf("%d: HASH is %d, not Bottlerocket's 10 MiB", size, hash)
		}
		if hash > 10<<20 && HashTreeBytes(root+2<<20) <= hash-1<<20 {
			t.Errorf("%d: HASH %d is larger than it needs to be for ROOT %d", size, hash, root)
		}
		if total+2<<20 > size {
			t.Errorf("%d: the plan takes %d bytes", size, total)
		}
		d := disktest.New(size, 512)
		if _, err := CreateDisk(d, plan, gptprio.GUID{1}); err != nil {
			t.Errorf("%d: %v", size, err)
		}
	}
}

type zeroReader struct{}

func (zeroReader) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	return len(p), nil
}

// TestHashTreeBytesMatchesVerity: the plan's estimate is the hash device
// size the verity package builds.
func TestHashTreeBytesMatchesVerity(t *testing.T) {
	for _, n := range []int64{2, 128, 129, 128 * 128, 128*128 + 1, 25600} {
		tree, err := verity.Build(context.Background(), zeroReader{}, n*4096, verity.DefaultParams())
		if err != nil {
			t.Fatal(err)
		}
		if got := HashTreeBytes(n * 4096); got != tree.HashDeviceSize {
			t.Errorf("%d blocks: HashTreeBytes %d, verity %d", n, got, tree.HashDeviceSize)
		}
	}
}

// TestUnifiedPlan: the unified plan is the split plan up to PRIVATE, with
// ROOT smaller by half of DATA, then Bottlerocket's DATA partition (type,
// preferred unique GUID, name) of a sixteenth of the disk, ending where
// the split plan's 1 MiB placeholder ends; gptprio still finds both sets
// and PRIVATE by type.
func TestUnifiedPlan(t *testing.T) {
	for _, size := range []int64{272 << 20, 352 << 20, 2 << 30, 2<<30 + 5<<20, 8 << 30, 64 << 30} {
		split, err := BottlerocketPlan(size)
		if err != nil {
			t.Fatal(err)
		}
		uni, err := BottlerocketPlanFor(size, PlanUnified)
		if err != nil {
			t.Fatal(err)
		}
		if len(uni) != len(split) {
			t.Fatalf("%d: %d partitions, split has %d", size, len(uni), len(split))
		}
		data := uni[len(uni)-1]
		if data.Name != "BOTTLEROCKET-DATA" || data.Type.String() != "626f7474-6c65-6474-6861-726d61726b73" ||
			data.ID.String() != "5b94e8df-28b8-485c-9d19-362263b5944c" || data.Bytes < size/16>>20<<20 || data.Bytes > size/16+1<<20 {
			t.Errorf("%d: DATA %+v (want a sixteenth of the disk)", size, data)
		}
		var total int64
		for i, p := range uni {
			total += p.Bytes
			s := split[i]
			if p.Name != s.Name && i != len(uni)-1 || p.Type != s.Type || p.Attr != s.Attr {
				t.Errorf("%d: partition %d %+v, split has %+v", size, i+1, p, s)
			}
			if strings.Contains(p.Name, "ROOT") && (p.Bytes >= s.Bytes || HashTreeBytes(p.Bytes) > uni[i+1].Bytes) {
				t.Errorf("%d: %s %d (split: %d), HASH %d", size, p.Name, p.Bytes, s.Bytes, uni[i+1].Bytes)
			}
		}
		if total != size>>20<<20-2<<20 {
			t.Errorf("%d: the plan takes %d bytes, not all but the first and last MiB", size, total)
		}
		d := disktest.New(size, 512)
		tb, err := CreateDisk(d, uni, gptprio.GUID{7})
		if err != nil {
			t.Fatalf("%d: %v", size, err)
		}
		l, err := gptprio.FindLayout(tb)
		if err != nil || len(l.Sets) != 2 || l.Private != 12 || l.Sets[1].Root != 9 {
			t.Errorf("%d: layout %+v %v", size, l, err)
		}
		if p := tb.Partition(13); p.ID != DataPartitionID || p.Name() != DataLabel || p.Type != TypeData {
			t.Errorf("%d: partition 13 %v %q %v", size, p.ID, p.Name(), p.Type)
		}
		if n, err := gptprio.Next(tb); err != nil || n != gptprio.SetA {
			t.Errorf("%d: next %v %v", size, n, err)
		}
	}
	if _, err := BottlerocketPlanFor(220<<20, PlanUnified); err == nil || !strings.Contains(err.Error(), "too small") {
		t.Errorf("a 220 MiB unified disk: %v", err)
	}
	if _, err := BottlerocketPlanFor(2<<30, "mixed"); err == nil {
		t.Error("an unknown plan was accepted")
	}
	if _, err := ParsePartitionPlan("Unified"); err == nil {
		t.Error("ParsePartitionPlan accepted Unified")
	}
}
