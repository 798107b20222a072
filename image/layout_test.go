package image

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/disktest"
	"github.com/updog/updog/internal/testutil"
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
		var attr gptprio.Attr
		if w.Attr == "0101000000000000" {
			attr = 0x0101000000000000
		}
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
