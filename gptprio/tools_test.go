package gptprio

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/testutil"
)

// These tests compare our GPT code with sgdisk (gdisk package) and cgpt on
// image files. They skip when the tools are missing, and fail under CI.

func imageFile(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return p
}

func openFile(t *testing.T, path string) *blockdev.File {
	t.Helper()
	d, err := blockdev.Open(path, blockdev.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// sgdiskVerify runs sgdisk -v and fails unless it reports no problems. It
// reads the text, because sgdisk -v exits 0 even when it finds problems.
func sgdiskVerify(t *testing.T, sgdisk, path string) {
	t.Helper()
	out := testutil.Run(t, sgdisk, "-v", path)
	if !strings.Contains(out, "No problems found") || strings.Contains(strings.ToLower(out), "warning") {
		t.Fatalf("sgdisk -v reports problems:\n%s", out)
	}
}

func cgptField(t *testing.T, cgpt, flag string, n int, path string) int {
	t.Helper()
	out := testutil.Run(t, cgpt, "show", "-i", strconv.Itoa(n), flag, path)
	v, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("cgpt show -i %d %s: %q", n, flag, out)
	}
	return v
}

func TestOurTablesPassSgdiskAndCgpt(t *testing.T) {
	sgdisk := testutil.Tool(t, "sgdisk")
	cgpt := testutil.Tool(t, "cgpt")
	path := imageFile(t, 64*mib)
	d := openFile(t, path)
	if err := Write(d, layoutTable(t, 64, 512, abParts)); err != nil {
		t.Fatal(err)
	}
	sgdiskVerify(t, sgdisk, path)

	check := func(stage string) {
		t.Helper()
		tb, err := Read(d)
		if err != nil {
			t.Fatal(err)
		}
		sgdiskVerify(t, sgdisk, path)
		for _, n := range []int{3, 6} {
			a := tb.Partitions[n-1].Attributes
			succ := 0
			if a.Successful() {
				succ = 1
			}
			got := [3]int{cgptField(t, cgpt, "-P", n, path), cgptField(t, cgpt, "-T", n, path), cgptField(t, cgpt, "-S", n, path)}
			if want := [3]int{a.Priority(), a.Tries(), succ}; got != want {
				t.Errorf("%s: partition %d: cgpt reads P/T/S %v, we wrote %v", stage, n, got, want)
			}
		}
	}
	check("fresh")
	steps := []struct {
		name string
		f    func(*Table, Set) (*Table, error)
	}{
		{"clear-inactive", ClearInactive},
		{"mark-inactive-valid", func(tb *Table, s Set) (*Table, error) { return MarkInactiveValid(tb, s, 3) }},
		{"upgrade-to-inactive", UpgradeToInactive},
		{"rollback-to-inactive", RollbackToInactive},
		{"cancel-upgrade", CancelUpgrade},
		{"mark-successful-boot", MarkSuccessfulBoot},
	}
	for _, s := range steps {
		tb, err := Read(d)
		if err != nil {
			t.Fatal(err)
		}
		nt, err := s.f(tb, SetA)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if err := Write(d, nt); err != nil {
			t.Fatal(err)
		}
		check(s.name)
	}
}

var sgdiskAttr = regexp.MustCompile(`Attribute flags: ([0-9A-Fa-f]{16})`)

func TestReadTablesWrittenBySgdiskAndCgpt(t *testing.T) {
	sgdisk := testutil.Tool(t, "sgdisk")
	cgpt := testutil.Tool(t, "cgpt")
	path := imageFile(t, 64*mib)
	args := []string{"--clear", "--disk-guid=11111111-2222-4333-8444-555555555555"}
	for i, p := range abParts {
		n := i + 1
		args = append(args, fmt.Sprintf("-n%d:0:+%dM", n, p.mib), fmt.Sprintf("-t%d:%v", n, p.typ), fmt.Sprintf("-c%d:%s", n, p.name))
	}
	// Bottlerocket's image builder sets A's priority 1 and successful with -A.
	args = append(args, "-A3:set:48", "-A3:set:56", "-A1:set:2", path)
	testutil.Run(t, sgdisk, args...)
	// cgpt changes B's and the PRIVATE partition's bits.
	testutil.Run(t, cgpt, "add", "-i", "6", "-P", "7", "-T", "5", "-S", "0", path)
	testutil.Run(t, cgpt, "add", "-i", "9", "-S", "1", path) // bit 56 on PRIVATE: a foreign bit we must keep

	tb, err := Read(openFile(t, path))
	if err != nil {
		t.Fatal(err)
	}
	if tb.BackupStale || tb.BackupProblem != nil || tb.RecoveredFromBackup {
		t.Fatalf("problems reading sgdisk's table: %+v", tb)
	}
	for i, p := range abParts {
		got := tb.Partitions[i]
		if got.Type != p.typ || got.Name() != p.name || got.Sectors() != p.mib*mib/512 {
			t.Errorf("partition %d: %v %q %d sectors, want %v %q", i+1, got.Type, got.Name(), got.Sectors(), p.typ, p.name)
		}
		out := testutil.Run(t, sgdisk, "-i", strconv.Itoa(i+1), path)
		m := sgdiskAttr.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no attribute flags in sgdisk -i output:\n%s", out)
		}
		want, _ := strconv.ParseUint(m[1], 16, 64)
		if uint64(got.Attributes) != want {
			t.Errorf("partition %d: attributes %#x, sgdisk says %#x", i+1, uint64(got.Attributes), want)
		}
	}
	if a := tb.Partitions[5].Attributes; a.Priority() != 7 || a.Tries() != 5 || a.Successful() {
		t.Errorf("cgpt's B bits read as %v", a)
	}
}

func TestCgptCreateHasNoProtectiveMBR(t *testing.T) {
	sgdisk := testutil.Tool(t, "sgdisk")
	cgpt := testutil.Tool(t, "cgpt")
	path := imageFile(t, 64*mib)
	testutil.Run(t, cgpt, "create", path)
	testutil.Run(t, cgpt, "add", "-b", "2048", "-s", "4096", "-t", TypeBoot.String(), "-l", "BOOT-A", "-P", "1", "-S", "1", path)
	d := openFile(t, path)
	tb, err := Read(d)
	if err != nil {
		t.Fatal(err)
	}
	if tb.ProtectiveMBR {
		t.Fatal("cgpt create wrote no protective MBR, but we think there is one")
	}
	if a := tb.Partitions[0].Attributes; a.Priority() != 1 || !a.Successful() {
		t.Fatalf("cgpt attributes read as %v", a)
	}
	if err := Write(d, tb); err != nil {
		t.Fatal(err)
	}
	sgdiskVerify(t, sgdisk, path) // would say "Found valid GPT with corrupt MBR" without our PMBR
	if cgptField(t, cgpt, "-P", 1, path) != 1 {
		t.Error("cgpt lost the priority after our rewrite")
	}
}
