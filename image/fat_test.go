package image

import (
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
	fsck := testutil.Tool(t, "fsck.fat")
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
		if mdir, err := exec.LookPath("mdir"); err == nil {
			cmd := exec.Command(mdir, "-i", p, "::")
			cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
			if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "1234-5678") {
				t.Errorf("%+v: mdir: %v\n%s", c, err, out)
			}
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
