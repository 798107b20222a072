// Package hugeheap asks the kernel to back a process's Go heap with
// transparent huge pages where it offers them on request
// (/sys/kernel/mm/transparent_hugepage/enabled set to "madvise", the
// usual default).
//
// An install touches its whole working set (decode buffers, the dm-verity
// batches, the read-ahead) within its first second. Faulted in 4 KiB at a
// time, that is some 13,000 page faults for updog's 50 MiB, each one
// costly in a virtual machine: measured on the two-vCPU guest of the
// benchmarks, 0.17 s of a 1 GiB install's wall time and a quarter of its
// system time, and the 8 MiB hash image took 0.25 s instead of 0.05 s. In
// 2 MiB pages it is a few dozen faults.
//
// The Go runtime itself advises only its own metadata, so Advise reserves
// the heap's address space up front: it allocates n bytes (fresh memory
// from the kernel, which the runtime does not clear, so not one page is
// touched), advises the 2 MiB-aligned range inside them, and lets them go.
// The heap reuses that range for what it allocates next, and the advice
// stays with the mapping (the runtime returns freed memory with
// MADV_DONTNEED, which keeps it).
//
// The costs, why the Go runtime stopped advising its heap (Go 1.21.4):
// with transparent_hugepage/defrag at "madvise" (the usual default), a
// fault in advised memory may compact or reclaim memory synchronously on a
// host whose memory is fragmented; and khugepaged may collapse a 2 MiB
// region the runtime's scavenger partly returned back into a whole huge
// page, so resident memory can grow towards the whole advised range plus
// the rest, unseen by the runtime's memory limit. For updog, a process of
// seconds to minutes with a bounded heap, the measured peak stays under
// its 64 MiB bound (55-62 MiB at 1 and 4 GiB); huge_pages = false in
// updog.toml turns it off.
package hugeheap
