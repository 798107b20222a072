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
// MADV_DONTNEED, which keeps it). Peak resident memory can grow by up to a
// huge page per region the heap only partly uses.
package hugeheap
