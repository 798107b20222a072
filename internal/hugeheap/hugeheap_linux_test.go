package hugeheap

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/updog/updog/internal/testutil"
)

// vmFlags returns the VmFlags of the mapping of /proc/self/smaps holding
// addr.
func vmFlags(t *testing.T, addr uintptr) []string {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if r, _, ok := strings.Cut(line, " "); ok && strings.Contains(r, "-") && !strings.HasSuffix(r, ":") {
			lo, hi, _ := strings.Cut(r, "-")
			a, err1 := strconv.ParseUint(lo, 16, 64)
			b, err2 := strconv.ParseUint(hi, 16, 64)
			in = err1 == nil && err2 == nil && uint64(addr) >= a && uint64(addr) < b
			continue
		}
		if in && strings.HasPrefix(line, "VmFlags:") {
			return strings.Fields(strings.TrimPrefix(line, "VmFlags:"))
		}
	}
	t.Fatalf("no mapping holds %#x", addr)
	return nil
}

// TestAdvise: the range advised is 2 MiB-aligned, inside the bytes
// reserved, and its mapping carries the kernel's "hg" (MADV_HUGEPAGE)
// flag; too little to hold two huge pages is not advised.
func TestAdvise(t *testing.T) {
	if _, err := os.Stat("/sys/kernel/mm/transparent_hugepage/enabled"); err != nil {
		testutil.Missing(t, "this kernel has no transparent huge pages: %v", err)
	}
	start, m := advise(16 << 20)
	if m == 0 {
		t.Fatal("nothing advised, although the kernel has transparent huge pages")
	}
	if start%hugePage != 0 || m%hugePage != 0 || m < 14<<20 || m > 16<<20 {
		t.Fatalf("advised %d bytes at %#x", m, start)
	}
	for _, a := range []uintptr{start, start + uintptr(m) - 1} {
		if fl := vmFlags(t, a); !contains(fl, "hg") {
			t.Fatalf("the mapping at %#x is not advised: %v", a, fl)
		}
	}
	if _, m := advise(3 << 20); m != 0 && m != hugePage {
		t.Fatalf("3 MiB: %d bytes advised", m)
	}
	if Advise(hugePage) != 0 {
		t.Fatal("one huge page's worth was advised")
	}
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}
