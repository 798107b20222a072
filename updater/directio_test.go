package updater

import (
	"context"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/repo"
)

// residentPages is how many of the pages of [off, off+n) of the file at
// path are in the page cache (mincore over a read-only mapping).
func residentPages(t *testing.T, path string, off, n int64) (resident, total int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), off, int(n), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (n+int64(os.Getpagesize())-1)/int64(os.Getpagesize()))
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	for _, v := range vec {
		if v&1 != 0 {
			resident++
		}
	}
	return resident, len(vec)
}

// TestUpdateDirectIO: with direct_io the update writes set B exactly as
// without, the active set untouched, and the root image it wrote (and
// read back) is not left in the host's page cache.
func TestUpdateDirectIO(t *testing.T) {
	t.Parallel()
	for _, c := range []Codec{CodecZstd, CodecRaw, CodecXZ} {
		t.Run(string(c), func(t *testing.T) {
			t.Parallel()
			f := newFixtureRoot(t, 16)
			f.codec = c
			f.cfg.DirectIO = true
			if fd, err := os.OpenFile(f.disk, os.O_RDONLY|unix.O_DIRECT, 0); err != nil {
				if os.Getenv("CI") != "" {
					t.Fatalf("the test directory takes no O_DIRECT: %v", err)
				}
				t.Skipf("the test directory takes no O_DIRECT: %v", err)
			} else {
				fd.Close()
			}
			r := f.addRelease("1.1.0", nil)
			f.publish(repo.Options{})
			// Drop the image's pages: what is resident after comes from
			// the install.
			if fd, err := os.Open(f.disk); err == nil {
				unix.Fadvise(int(fd.Fd()), 0, 0, unix.FADV_DONTNEED)
				fd.Close()
			}
			before := f.snapshotActive()
			u := f.updater()
			if _, err := u.Update(context.Background(), UpdateOptions{}); err != nil {
				t.Fatalf("update: %v", err)
			}
			// Before anything reads set B back through the page cache.
			tb, l := f.table()
			p := tb.Partition(l.Sets[gptprio.SetB].Root)
			ss := int64(tb.SectorSize)
			res, total := residentPages(t, f.disk, int64(p.FirstLBA)*ss, int64(len(r.root)))
			t.Logf("%s: %d of the %d pages of the root image written are in the page cache", c, res, total)
			if res*4 > total {
				t.Fatalf("%s: %d of %d pages of the root written with direct_io are in the page cache", c, res, total)
			}
			f.assertSetHolds(gptprio.SetB, r)
			after := f.snapshotActive()
			for n, s := range before.sums {
				if after.sums[n] != s {
					t.Fatalf("the active set's partition %d changed", n)
				}
			}
		})
	}
}
