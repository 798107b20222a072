package hugeheap

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hugePage is the x86-64 and arm64 (4 KiB base pages) huge page size.
const hugePage = 2 << 20

// Advise reserves n bytes of heap advised for huge pages (see the package
// documentation). It returns the bytes advised: 0 where the kernel refused
// (built without transparent huge pages) or n is under two huge pages.
// Advised is not granted: with transparent_hugepage/enabled at "never",
// or no huge page free when a page is touched, the kernel uses small
// pages as before.
func Advise(n int) int {
	_, m := advise(n)
	return m
}

// advise is Advise, also returning where the range advised starts.
func advise(n int) (uintptr, int) {
	if n < 2*hugePage {
		return 0, 0
	}
	b := make([]byte, n)
	p := unsafe.Pointer(unsafe.SliceData(b))
	skip := int((hugePage - uintptr(p)%hugePage) % hugePage)
	m := (n - skip) &^ (hugePage - 1)
	if m <= 0 {
		return 0, 0
	}
	start := unsafe.Add(p, skip)
	err := unix.Madvise(unsafe.Slice((*byte)(start), m), unix.MADV_HUGEPAGE)
	runtime.KeepAlive(b)
	if err != nil {
		return 0, 0
	}
	return uintptr(start), m
}
