package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/image"
	"github.com/updog/updog/internal/blockdev"
)

// newImage writes an empty Bottlerocket layout to a sparse image file.
func newImage(t *testing.T, path string, ss int) string {
	t.Helper()
	const size = 512 << 20
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	d, err := blockdev.Open(path, blockdev.Options{SectorSize: ss})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	plan, _ := image.BottlerocketPlan(size)
	if _, err := image.CreateDisk(d, plan, gptprio.GUID{7}); err != nil {
		t.Fatal(err)
	}
	return path
}

func noHost() (uint32, uint32, error) { return 0, 0, errors.New("not a host") }

// sp runs signpost on an image with no running host behind it.
func sp(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := runWith(context.Background(), args, &out, &errb, t.TempDir(), noHost)
	return out.String(), errb.String(), code
}

func status(t *testing.T, disk string, extra ...string) statusJSON {
	t.Helper()
	out, errs, code := sp(t, append([]string{"--disk", disk, "--json", "status"}, extra...)...)
	if code != 0 {
		t.Fatalf("status: %d %s", code, errs)
	}
	var st statusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	return st
}

func TestStatusJSON(t *testing.T) {
	disk := newImage(t, filepath.Join(t.TempDir(), "disk.img"), 512)
	out, _, code := sp(t, "--disk", disk, "--json", "status")
	if code != 0 {
		t.Fatal(code)
	}
	var raw map[string]any
	json.Unmarshal([]byte(out), &raw)
	for _, k := range []string{"active", "next", "boot_ever_succeeded", "sets"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("status --json lacks %q", k)
		}
	}
	if raw["active"] != nil {
		t.Errorf("active on an image without --active: %v", raw["active"])
	}
	st := status(t, disk)
	if *st.Next != "a" || st.Sets["a"] != (setJSON{1, 0, true, 3, 4, 5}) || st.Sets["b"] != (setJSON{0, 0, false, 8, 9, 10}) {
		t.Errorf("status: %+v", st)
	}
}

func TestUsageErrors(t *testing.T) {
	disk := newImage(t, filepath.Join(t.TempDir(), "disk.img"), 512)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{}, exitUsage, "exactly one command"},
		{[]string{"--disk", disk, "frobnicate"}, exitUsage, "unknown command"},
		{[]string{"--disk", disk, "upgrade-to-inactive"}, exitUsage, "needs --active"},
		{[]string{"--disk", disk, "--active", "c", "clear-inactive"}, exitUsage, "--active"},
		{[]string{"--disk", disk, "--tries", "0", "--active", "a", "mark-inactive-valid"}, exitUsage, "--tries"},
		{[]string{"--bogus"}, exitUsage, "unknown flag"},
		{[]string{"--disk", filepath.Join(t.TempDir(), "missing.img"), "status"}, exitError, "missing.img"},
		{[]string{"--disk", disk, "--active", "a", "upgrade-to-inactive"}, exitError, "partition 8"},
		{[]string{"status"}, exitError, "no disk given"},
	} {
		_, errs, code := sp(t, c.args...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("signpost %v: exit %d, stderr %q; want exit %d mentioning %q", c.args, code, errs, c.code, c.want)
		}
	}
	out, _, code := sp(t, "--help")
	if code != 0 || !strings.Contains(out, "upgrade-to-inactive") || !strings.Contains(out, "Exit status") {
		t.Errorf("--help: %d %q", code, out)
	}
}

func TestNoBootableSetExitCode(t *testing.T) {
	disk := newImage(t, filepath.Join(t.TempDir(), "disk.img"), 512)
	// Take away A's priority: nothing can boot.
	d, _ := blockdev.Open(disk, blockdev.Options{})
	tb, _ := gptprio.Read(d)
	tb.Partitions[2].Attributes = 0
	gptprio.Write(d, tb)
	d.Close()
	_, errs, code := sp(t, "--disk", disk, "next")
	if code != exitNoBootable || !strings.Contains(errs, "no bootable") {
		t.Fatalf("exit %d, %q", code, errs)
	}
	if st := status(t, disk); st.Next != nil {
		t.Errorf("status next = %v, want null", *st.Next)
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	disk := newImage(t, filepath.Join(t.TempDir(), "disk.img"), 512)
	before := gptRegions(t, disk)
	for _, args := range [][]string{
		{"--active", "a", "mark-inactive-valid"},
		{"--active", "a", "mark-successful-boot"},
		{"next"},
		{"rewrite-table"},
	} {
		out, errs, code := sp(t, append([]string{"--disk", disk, "--dry-run"}, args...)...)
		if code != 0 {
			t.Fatalf("%v: %d %s", args, code, errs)
		}
		if args[0] == "--active" && !strings.Contains(out, "dry run") {
			t.Errorf("%v: output does not say it is a dry run: %q", args, out)
		}
	}
	if after := gptRegions(t, disk); !bytes.Equal(before, after) {
		t.Fatal("--dry-run changed the disk")
	}
}

// gptRegions returns the first and last MiB of a disk image, where every
// byte signpost may write lives.
func gptRegions(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	b := make([]byte, 2<<20)
	f.ReadAt(b[:1<<20], 0)
	f.ReadAt(b[1<<20:], fi.Size()-1<<20)
	return b
}

// TestLifeCycleCLI drives the whole cycle through the command line, on
// both sector sizes, letting `next` play the bootloader.
func TestLifeCycleCLI(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		disk := newImage(t, filepath.Join(t.TempDir(), "disk.img"), ss)
		active := "a"
		do := func(args ...string) string {
			t.Helper()
			out, errs, code := sp(t, append([]string{"--disk", disk, "--active", active}, args...)...)
			if code != 0 {
				t.Fatalf("%d: %v: exit %d: %s", ss, args, code, errs)
			}
			return strings.TrimSpace(out)
		}
		boot := func() string {
			active = do("next")
			return active
		}
		upgrade := func() {
			do("clear-inactive")
			do("mark-inactive-valid")
			do("upgrade-to-inactive")
		}
		if boot() != "a" {
			t.Fatal("fresh disk does not boot a")
		}
		do("mark-successful-boot")
		if do("has-boot-ever-succeeded") != "true" {
			t.Fatal("boot never succeeded after mark-successful-boot")
		}
		upgrade()
		if boot() != "b" {
			t.Fatal("upgrade does not boot b")
		}
		if st := status(t, disk, "--active", "b"); st.Sets["b"].Tries != 0 || *st.Active != "b" {
			t.Fatalf("try not used: %+v", st.Sets["b"])
		}
		if boot() != "a" {
			t.Fatal("failed b does not fall back to a")
		}
		upgrade()
		if boot() != "b" {
			t.Fatal("second upgrade does not boot b")
		}
		do("mark-successful-boot")
		for i := 0; i < 2; i++ {
			if boot() != "b" {
				t.Fatalf("boot %d after marking b good picks %s", i, active)
			}
		}
		do("rollback-to-inactive")
		if boot() != "a" {
			t.Fatal("rollback does not boot a")
		}
		do("cancel-upgrade") // from a: a priority 2, b priority 0
		if st := status(t, disk); st.Sets["a"].Priority != 2 || st.Sets["b"].Priority != 0 {
			t.Fatalf("cancel: %+v", st.Sets)
		}
	}
}

func TestDamagedPrimaryWarnsAndRepairs(t *testing.T) {
	disk := newImage(t, filepath.Join(t.TempDir(), "disk.img"), 512)
	f, _ := os.OpenFile(disk, os.O_RDWR, 0)
	f.WriteAt([]byte("XXXX"), 512) // break the primary header's signature
	f.Close()
	_, errs, code := sp(t, "--disk", disk, "status")
	if code != 0 || !strings.Contains(errs, "primary GPT is damaged") {
		t.Fatalf("status: %d %q", code, errs)
	}
	if st := status(t, disk); st.GPT.ReadFrom != "backup" || st.GPT.PrimaryProblem == nil {
		t.Fatalf("status gpt: %+v", st.GPT)
	}
	if _, errs, code := sp(t, "--disk", disk, "rewrite-table"); code != 0 {
		t.Fatalf("rewrite-table: %d %s", code, errs)
	}
	if st := status(t, disk); st.GPT.ReadFrom != "primary" || st.GPT.PrimaryProblem != nil {
		t.Fatalf("not repaired: %+v", st.GPT)
	}
}

// TestHostDetection fakes a running host: / is on dm-0 (dm-verity) over
// partition 9 (ROOT-B) of nvme0n1, whose device node is our image.
func TestHostDetection(t *testing.T) {
	root := t.TempDir()
	rel := "devices/pci0000:00/nvme0/nvme0n1"
	for _, dir := range []string{"dev", "sys/" + rel + "/nvme0n1p9", "sys/devices/virtual/block/dm-0/dm",
		"sys/devices/virtual/block/dm-0/slaves/nvme0n1p9", "sys/class/block", "sys/dev/block"} {
		os.MkdirAll(filepath.Join(root, dir), 0o755)
	}
	os.WriteFile(filepath.Join(root, "sys", rel, "nvme0n1p9", "partition"), []byte("9\n"), 0o644)
	os.Symlink("../../"+rel+"/nvme0n1p9", filepath.Join(root, "sys/class/block/nvme0n1p9"))
	os.Symlink("../../devices/virtual/block/dm-0", filepath.Join(root, "sys/dev/block/253:0"))
	disk := newImage(t, filepath.Join(root, "dev", "nvme0n1"), 512)

	host := func() (uint32, uint32, error) { return 253, 0, nil }
	var out, errb bytes.Buffer
	if code := runWith(context.Background(), []string{"--json", "status"}, &out, &errb, root, host); code != 0 {
		t.Fatalf("status: %d %s", code, errb.String())
	}
	var st statusJSON
	json.Unmarshal(out.Bytes(), &st)
	if st.Disk != disk || st.Active == nil || *st.Active != "b" {
		t.Fatalf("host status: disk %s active %v", st.Disk, st.Active)
	}
	// The active set found on the host is used by commands that need it.
	out.Reset()
	if code := runWith(context.Background(), []string{"--json", "--dry-run", "mark-inactive-valid"}, &out, &errb, root, host); code != 0 {
		t.Fatalf("mark-inactive-valid: %s", errb.String())
	}
	var res editResult
	json.Unmarshal(out.Bytes(), &res)
	if len(res.Changes) != 1 || res.Changes[0].Partition != 3 {
		t.Fatalf("with b active, the inactive BOOT is partition 3: %+v", res.Changes)
	}
}

// TestBadFlagValuesAreUsageErrors: every flag value signpost cannot use is a
// usage error (exit 2), found before the disk is touched.
func TestBadFlagValuesAreUsageErrors(t *testing.T) {
	disk := newImage(t, filepath.Join(t.TempDir(), "disk.img"), 512)
	for _, args := range [][]string{
		{"--sector-size", "1024", "status"},
		{"--sector-size", "-512", "status"},
		{"--sector-size", "x", "status"},
		{"--tries", "16", "--active", "a", "mark-inactive-valid"},
		{"--tries", "-1", "--active", "a", "mark-inactive-valid"},
		{"--active", "c", "--dry-run", "clear-inactive"},
		{"--active", "", "status"},
		{"--lock-wait", "-1s", "status"},
		{"--lock-wait", "soon", "status"},
		{"--json=maybe", "status"},
		{"--dry-run=2", "next"},
		{"--disk", "", "status"},
	} {
		full := append([]string{"--disk", disk}, args...)
		if args[0] == "--disk" {
			full = args
		}
		_, errs, code := sp(t, full...)
		if code != exitUsage {
			t.Errorf("signpost %v: exit %d (%q), want %d", full, code, errs, exitUsage)
		}
	}
	// --sector-size 4096 names a size the image was not written with: not a
	// usage error, but the table is not found.
	if _, _, code := sp(t, "--disk", disk, "--sector-size", "4096", "status"); code != exitError {
		t.Errorf("--sector-size 4096 on a 512-byte image: exit %d", code)
	}
}

// TestPrivateDiffShowsBit57: the change mark-successful-boot makes to the
// PRIVATE partition (bit 57 only) shows that bit and the raw values.
func TestPrivateDiffShowsBit57(t *testing.T) {
	disk := newImage(t, filepath.Join(t.TempDir(), "disk.img"), 512)
	out, errs, code := sp(t, "--disk", disk, "--active", "a", "--dry-run", "mark-successful-boot")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	want := "partition 12 (BOTTLEROCKET-PRIVATE): boot_ever_succeeded=false (0x0000000000000000) -> boot_ever_succeeded=true (0x0200000000000000)"
	if !strings.Contains(out, want) {
		t.Errorf("the PRIVATE change does not show bit 57:\n%s", out)
	}
	out, _, _ = sp(t, "--disk", disk, "--active", "a", "--dry-run", "--json", "mark-successful-boot")
	var res editResult
	json.Unmarshal([]byte(out), &res)
	for _, c := range res.Changes {
		if c.Partition == 12 && (c.BeforeHex != "0000000000000000" || c.AfterHex != "0200000000000000") {
			t.Errorf("JSON change of PRIVATE: %+v", c)
		}
	}
}

// TestDamagedPrimary4096: an image with 4096-byte sectors whose primary
// header is damaged is still found (from its backup) without --sector-size.
func TestDamagedPrimary4096(t *testing.T) {
	disk := newImage(t, filepath.Join(t.TempDir(), "disk.img"), 4096)
	f, _ := os.OpenFile(disk, os.O_RDWR, 0)
	f.WriteAt([]byte("XXXX"), 4096)
	f.Close()
	if st := status(t, disk); st.GPT.ReadFrom != "backup" || st.GPT.SectorSize != 4096 {
		t.Fatalf("status: %+v", st.GPT)
	}
	if _, errs, code := sp(t, "--disk", disk, "rewrite-table"); code != 0 {
		t.Fatalf("rewrite-table: %d %s", code, errs)
	}
	if st := status(t, disk); st.GPT.ReadFrom != "primary" {
		t.Fatalf("not repaired: %+v", st.GPT)
	}
}
