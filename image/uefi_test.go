package image

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/updog/updog/internal/testutil"
)

// uefiDiskSize leaves the test's ROOT partitions 54 MiB next to a 65 MiB
// ESP, with the unified plan: (400 - 207 - 400/16) / 2 - 30.
const uefiDiskSize = 400 << 20

// needGrub skips (fails under CI) without grub-mkimage and GRUB's
// x86_64-efi modules.
func needGrub(t *testing.T) {
	t.Helper()
	if runtime.GOARCH != "amd64" {
		t.Skipf("GRUB's x86_64-efi modules are packaged for amd64 (this is %s)", runtime.GOARCH)
	}
	testutil.Tool(t, "grub-mkimage")
	if _, err := os.Stat("/usr/lib/grub/x86_64-efi/moddep.lst"); err != nil {
		testutil.Missing(t, "GRUB's x86_64-efi modules (Debian package grub-efi-amd64-bin): %v", err)
	}
}

// mtools runs an mtools command on a file system image.
func mtools(t *testing.T, tool string, args ...string) string {
	t.Helper()
	cmd := exec.Command(testutil.Tool(t, tool), args...)
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v", tool, strings.Join(args, " "), err)
	}
	return string(out)
}

// TestBuildUEFI: with UEFI, the ESP of the disk image is 65 MiB (the
// 64 MiB asked, rounded so ROOT-A and ROOT-B give up 30 MiB each) and
// holds the GRUB image given, grub.cfg and stage one's kernel and
// initramfs, byte for byte; grub.cfg starts stage one from the ESP and
// names no BOOT partition; fsck.fat finds nothing wrong.
func TestBuildUEFI(t *testing.T) {
	dir := t.TempDir()
	o := testInputs(t, dir)
	o.DiskSize, o.UEFI, o.Plan = uefiDiskSize, true, PlanUnified
	grub := writeTemp(t, append([]byte("MZ not really GRUB"), make([]byte, 700_000)...))
	o.GrubEFI = grub
	stageOne := filepath.Join(dir, "bootsel.img")
	if err := os.WriteFile(stageOne, bytes.Repeat([]byte("bootsel's initramfs "), 100_000), 0o644); err != nil {
		t.Fatal(err)
	}
	o.StageOneInitrd = stageOne
	res, err := Build(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(res.Dir, res.Release.Disk.File)
	sizes := map[string]int64{}
	for _, p := range res.Release.Partitions {
		sizes[p.Name] = p.Bytes
	}
	plain, err := BottlerocketPlanFor(uefiDiskSize, PlanUnified)
	if err != nil {
		t.Fatal(err)
	}
	if sizes["EFI-SYSTEM"] != 65<<20 || sizes["BOTTLEROCKET-ROOT-A"] != plain[3].Bytes-30<<20 || sizes["BOTTLEROCKET-ROOT-B"] != sizes["BOTTLEROCKET-ROOT-A"] {
		t.Errorf("EFI-SYSTEM %d MiB, ROOT-A %d MiB, ROOT-B %d MiB; want 65, %d, %d", sizes["EFI-SYSTEM"]>>20,
			sizes["BOTTLEROCKET-ROOT-A"]>>20, sizes["BOTTLEROCKET-ROOT-B"]>>20, plain[3].Bytes>>20-30, plain[3].Bytes>>20-30)
	}
	esp := writeTemp(t, partition(t, disk, "EFI-SYSTEM"))
	if out, err := exec.Command(testutil.Tool(t, "fsck.fat"), "-n", esp).CombinedOutput(); err != nil {
		t.Errorf("fsck.fat: %v\n%s", err, out)
	}
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cfg := mtools(t, "mtype", "-i", esp, "::/"+ESPGrubConfig)
	want := map[string][]byte{ESPBootLoader: read(grub), ESPKernel: read(o.Kernel), ESPInitrd: read(stageOne), ESPGrubConfig: []byte(cfg)}
	var used int64
	for p, w := range want {
		if got := mtools(t, "mtype", "-i", esp, "::/"+p); got != string(w) {
			t.Errorf("/%s on the ESP: %d bytes, want the %d given", p, len(got), len(w))
		}
		used += int64(len(w))
	}
	for _, p := range res.Release.Partitions {
		if p.Name == "EFI-SYSTEM" && p.Used != used {
			t.Errorf("release.json: the ESP uses %d bytes, want %d", p.Used, used)
		}
	}
	if ls := mtools(t, "mdir", "-/", "-b", "-i", esp, "::/"); len(strings.Fields(ls)) != 4+3 {
		t.Errorf("the ESP holds more than GRUB, grub.cfg, stage one and their 3 directories:\n%s", ls)
	}
	checkGrubConfig(t, cfg, o.Cmdline)
}

// checkGrubConfig: grub.cfg starts the ESP's kernel and initramfs with
// cmdline and names no BOOT partition, no other device and no search.
func checkGrubConfig(t *testing.T, cfg, cmdline string) {
	t.Helper()
	for _, line := range []string{"linux /" + ESPKernel + " " + cmdline, "initrd /" + ESPInitrd, "boot"} {
		if !strings.Contains(cfg, "\n"+line+"\n") {
			t.Errorf("grub.cfg has no line %q:\n%s", line, cfg)
		}
	}
	var code []string
	for _, l := range strings.Split(cfg, "\n") {
		if !strings.HasPrefix(l, "#") {
			code = append(code, l)
		}
	}
	for _, bad := range []string{"BOOT-", "boot.conf", "search", "root", "(hd", "gpt", "ext2", "dm-mod"} {
		if strings.Contains(strings.Join(code, "\n"), bad) {
			t.Errorf("grub.cfg names %q (it must start stage one from the ESP only):\n%s", bad, cfg)
		}
	}
}

// TestBuildUEFIReproducible: two UEFI builds from the same inputs, GRUB
// made by grub-mkimage, are byte-identical, and the ESP holds a PE image.
func TestBuildUEFIReproducible(t *testing.T) {
	needGrub(t)
	base := t.TempDir()
	o := testInputs(t, base)
	o.DiskSize, o.UEFI = uefiDiskSize, true
	var outs []string
	for _, n := range []string{"out0", "out1"} {
		oi := o
		oi.Out = filepath.Join(base, n)
		res, err := Build(context.Background(), oi)
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, oi.Out)
		if n == "out0" {
			esp := writeTemp(t, partition(t, filepath.Join(res.Dir, res.Release.Disk.File), "EFI-SYSTEM"))
			if efi := mtools(t, "mtype", "-i", esp, "::/"+ESPBootLoader); !strings.HasPrefix(efi, "MZ") || len(efi) < 100_000 {
				t.Errorf("/%s is %d bytes and not a PE image", ESPBootLoader, len(efi))
			}
			checkGrubConfig(t, mtools(t, "mtype", "-i", esp, "::/"+ESPGrubConfig), o.Cmdline)
		}
	}
	for _, d := range outputDiffs(t, outs[0], outs[1]) {
		t.Error(d)
	}
}

func TestWithESPSize(t *testing.T) {
	plan, err := BottlerocketPlanFor(2<<30, PlanSplit)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		esp, wantESP, rootLoss int64 // MiB
	}{{5, 5, 0}, {64, 65, 30}, {65, 65, 30}, {7, 7, 1}, {8, 9, 2}} {
		got, err := WithESPSize(plan, c.esp<<20)
		if err != nil {
			t.Fatalf("%d MiB: %v", c.esp, err)
		}
		var sum, sumPlan int64
		for i := range got {
			sum += got[i].Bytes
			sumPlan += plan[i].Bytes
			want := plan[i].Bytes
			switch plan[i].Name {
			case "EFI-SYSTEM":
				want = c.wantESP << 20
			case "BOTTLEROCKET-ROOT-A", "BOTTLEROCKET-ROOT-B":
				want -= c.rootLoss << 20
			}
			if got[i].Bytes != want {
				t.Errorf("%d MiB: %s is %d MiB, want %d", c.esp, plan[i].Name, got[i].Bytes>>20, want>>20)
			}
		}
		if sum != sumPlan {
			t.Errorf("%d MiB: the partitions take %d bytes, the plan's %d", c.esp, sum, sumPlan)
		}
	}
	if plan[1].Bytes != DefaultESPBytes {
		t.Errorf("WithESPSize changed the plan it was given")
	}
	for _, esp := range []int64{4 << 20, 64<<20 + 512, 2 << 30} {
		if _, err := WithESPSize(plan, esp); err == nil {
			t.Errorf("%d bytes: no error", esp)
		}
	}
}

func TestGrubConfig(t *testing.T) {
	cfg, err := GrubConfig("console=ttyS0,115200n8 quiet bootsel.timeout=10s x=$y a;b")
	if err != nil {
		t.Fatal(err)
	}
	checkGrubConfig(t, cfg, "console=ttyS0,115200n8 quiet bootsel.timeout=10s '"+"x=$y' 'a;b'")
	for _, bad := range []string{`a="b c"`, `it's`, `a\b`} {
		if _, err := GrubConfig(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestBuildUEFIOptions: the UEFI options are checked before anything is
// built.
func TestBuildUEFIOptions(t *testing.T) {
	dir := t.TempDir()
	o := testInputs(t, dir)
	for name, c := range map[string]func(o *BuildOptions){
		"no initramfs":         func(o *BuildOptions) { o.UEFI, o.Initrd = true, "" },
		"GRUB without --uefi":  func(o *BuildOptions) { o.GrubEFI = "x" },
		"quotes under GRUB":    func(o *BuildOptions) { o.UEFI, o.Cmdline = true, `a="b c"` },
		"ESP too large":        func(o *BuildOptions) { o.ESPSize = 2 << 30 },
		"ESP not whole MiB":    func(o *BuildOptions) { o.ESPSize = 6<<20 + 512 },
		"ESP smaller than 5":   func(o *BuildOptions) { o.ESPSize = 4 << 20 },
		"disk too small":       func(o *BuildOptions) { o.UEFI = true }, // testDiskSize's ROOT is 24 MiB
		"unknown architecture": func(o *BuildOptions) { o.UEFI, o.Arch, o.DiskSize = true, "riscv64", uefiDiskSize },
	} {
		oi := o
		c(&oi)
		if _, err := Build(context.Background(), oi); !errors.Is(err, ErrOptions) {
			t.Errorf("%s: %v, want ErrOptions", name, err)
		}
	}
	nothingLeft(t, dir, "initrd", "rootfs", "vmlinuz")
}

// TestBuildUEFIStageOneTooBig: stage one that does not fit the ESP is
// refused, naming both sizes.
func TestBuildUEFIStageOneTooBig(t *testing.T) {
	dir := t.TempDir()
	o := testInputs(t, dir)
	o.DiskSize, o.UEFI, o.ESPSize, o.GrubEFI = uefiDiskSize, true, 6<<20, writeTemp(t, []byte("MZ"))
	big := filepath.Join(dir, "big")
	f, _ := os.Create(big)
	f.Truncate(6 << 20)
	f.Close()
	o.StageOneInitrd = big
	_, err := Build(context.Background(), o)
	var tb *TooBigError
	if !errors.As(err, &tb) || tb.Have != 6<<20 || tb.Need <= 7<<20 {
		t.Fatalf("%v, want a TooBigError for a 6 MiB ESP", err)
	}
}
