package image

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/updog/updog/internal/testutil"
)

// TestWriteFAT: dosfstools' fsck.fat and mtools accept what WriteFAT
// writes, for the ESP of the plan (FAT16 with 512-byte sectors, FAT12 with
// 4096-byte ones) and for other sizes.
func TestWriteFAT(t *testing.T) {
	fsck, mdir := testutil.Tool(t, "fsck.fat"), testutil.Tool(t, "mdir")
	for _, c := range []struct {
		size int64
		ss   int
		typ  string
	}{{5 << 20, 512, "FAT16"}, {5 << 20, 4096, "FAT12"}, {1 << 20, 512, "FAT12"}, {200 << 20, 512, "FAT16"}} {
		p := filepath.Join(t.TempDir(), "esp.img")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(c.size)
		if err := WriteFAT(f, FATOptions{Size: c.size, SectorSize: c.ss, Serial: 0x12345678, HiddenSectors: 2048}); err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		f.Close()
		b, _ := os.ReadFile(p)
		if got := string(b[54:59]); got != c.typ {
			t.Errorf("%+v: %s", c, got)
		}
		if out, err := exec.Command(fsck, "-n", p).CombinedOutput(); err != nil || !strings.Contains(string(out), "0 files") {
			t.Errorf("%+v: fsck.fat: %v\n%s", c, err, out)
		}
		cmd := exec.Command(mdir, "-i", p, "::")
		cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "1234-5678") {
			t.Errorf("%+v: mdir: %v\n%s", c, err, out)
		}
	}
}

func TestWriteFATRefuses(t *testing.T) {
	for _, o := range []FATOptions{
		{Size: 5 << 20, SectorSize: 1024},
		{Size: 5<<20 + 1, SectorSize: 512},
		{Size: 8 * 512, SectorSize: 512},
		{Size: 4 << 30, SectorSize: 512},
	} {
		if err := WriteFAT(memFS(nil), o); !errors.Is(err, ErrFAT) {
			t.Errorf("%+v: %v", o, err)
		}
	}
}

// TestWriteFATFiles: the files WriteFAT puts in a FAT12 or FAT16 file
// system read back whole through mtools, fsck.fat finds nothing wrong, the
// small-letter names show as such and the times are the given ones.
func TestWriteFATFiles(t *testing.T) {
	fsck := testutil.Tool(t, "fsck.fat")
	mtype, mdir := testutil.Tool(t, "mtype"), testutil.Tool(t, "mdir")
	big := bytes.Repeat([]byte("0123456789abcdef"), 80_000) // 1.25 MiB: many clusters
	cfg := []byte("set timeout=0\n")
	for _, c := range []struct {
		size int64
		ss   int
	}{{5 << 20, 512}, {5 << 20, 4096}, {64 << 20, 512}, {64 << 20, 4096}} {
		p := filepath.Join(t.TempDir(), "esp.img")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(c.size)
		err = WriteFAT(f, FATOptions{Size: c.size, SectorSize: c.ss, Serial: 0x12345678, Time: 1767225600, Files: []FATFile{
			{Path: "EFI/BOOT/BOOTX64.EFI", Size: int64(len(big)), Data: bytes.NewReader(big)},
			{Path: "EFI/BOOT/grub.cfg", Size: int64(len(cfg)), Data: bytes.NewReader(cfg)},
			{Path: "EFI/updog/vmlinuz", Size: 3, Data: strings.NewReader("abc")},
			{Path: "EMPTY", Size: 0},
		}})
		f.Close()
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if out, err := exec.Command(fsck, "-n", "-v", p).CombinedOutput(); err != nil || !strings.Contains(string(out), "7 files") {
			t.Errorf("%+v: fsck.fat: %v\n%s", c, err, out)
		}
		mt := func(args ...string) string {
			cmd := exec.Command(args[0], args[1:]...)
			cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
			out, err := cmd.Output()
			if err != nil {
				t.Errorf("%+v: %s: %v", c, strings.Join(args, " "), err)
			}
			return string(out)
		}
		for name, want := range map[string][]byte{"EFI/BOOT/BOOTX64.EFI": big, "EFI/BOOT/grub.cfg": cfg, "efi/UPDOG/VMLINUZ": []byte("abc"), "EMPTY": nil} {
			if got := mt(mtype, "-i", p, "::/"+name); got != string(want) {
				t.Errorf("%+v: %s reads back as %d bytes, want %d", c, name, len(got), len(want))
			}
		}
		if got := mt(mdir, "-i", p, "::/EFI/BOOT"); !strings.Contains(got, "grub     cfg") || !strings.Contains(got, "BOOTX64  EFI") ||
			!strings.Contains(got, "2026-01-01   0:00") {
			t.Errorf("%+v: mdir ::/EFI/BOOT:\n%s", c, got)
		}
		if got := mt(mdir, "-i", p, "::/EFI"); !strings.Contains(got, "updog        <DIR>") {
			t.Errorf("%+v: mdir ::/EFI:\n%s", c, got)
		}
	}
}

func TestWriteFATFilesRefused(t *testing.T) {
	file := func(p string, n int) FATFile {
		return FATFile{Path: p, Size: int64(n), Data: bytes.NewReader(make([]byte, n))}
	}
	for _, files := range [][]FATFile{
		{file("EFI/BOOT/BOOTX64.EFIX", 1)},   // extension too long
		{file("LONGERNAME.TXT", 1)},          // name too long
		{file("Grub.cfg", 1)},                // mixed case needs a long name
		{file("A B", 1)},                     // space
		{file("EFI//X", 1)},                  // empty part
		{file("EFI/X", 1), file("EFI/X", 1)}, // twice
		{file("EFI", 1), file("EFI/X", 1)},   // a file as a directory
		{file("BIG", 6<<20)},                 // too big
		{{Path: "SHORT", Size: 10, Data: bytes.NewReader(make([]byte, 9))}}, // too little data
		{{Path: "NODATA", Size: 10}},
	} {
		m := make(memFS, 5<<20)
		if err := WriteFAT(m, FATOptions{Size: 5 << 20, SectorSize: 512, Files: files}); !errors.Is(err, ErrFAT) {
			t.Errorf("%s: %v, want ErrFAT", files[len(files)-1].Path, err)
		}
	}
}

func TestFATTime(t *testing.T) {
	for _, c := range []struct {
		unix       int64
		date, time uint16
		tenth      byte
	}{
		{0, 1<<5 | 1, 0, 0},                                           // before 1980: 1980-01-01
		{1767225600, 46<<9 | 1<<5 | 1, 0, 0},                          // 2026-01-01 00:00:00
		{1767225600 + 3600 + 61, 46<<9 | 1<<5 | 1, 1<<11 | 1<<5, 100}, // 01:01:01
		{1 << 40, 127<<9 | 12<<5 | 31, 23<<11 | 59<<5 | 29, 0},        // past 2107
	} {
		d, tm, tenth := fatTime(c.unix)
		if d != c.date || tm != c.time || tenth != c.tenth {
			t.Errorf("fatTime(%d) = %#x %#x %d, want %#x %#x %d", c.unix, d, tm, tenth, c.date, c.time, c.tenth)
		}
	}
}
