// Package gptprio reads and changes the boot state of an A/B disk: the GUID
// partition table, and the ChromeOS/Bottlerocket "gptprio" attribute bits
// on the BOOT partitions that tell the bootloader which partition set to
// start.
//
// What it owns:
//   - the GPT format on 512- and 4096-byte-sector disks: protective MBR,
//     primary and backup headers and entry arrays, CRC32 checks; reading
//     falls back to the backup copy when the primary is damaged ([Read]),
//     and writing is ordered so that a power cut at any instant leaves a
//     table that reads back as the old or the new one ([Write]);
//   - finding the partition sets by type GUID, as Bottlerocket does
//     ([FindLayout]);
//   - the boot selection rule of GRUB's gptprio.next ([Next], [Boot]) and
//     Bottlerocket signpost's boot-state changes ([MarkSuccessfulBoot],
//     [ClearInactive], [MarkInactiveValid], [UpgradeToInactive],
//     [CancelUpgrade], [RollbackToInactive]), all pure functions from a
//     table to a table.
//
// What it trusts: nothing on disk. Every field is bounds-checked before use,
// and a table whose copies are both damaged is an error, never a guess.
//
// What it must never do: write anything but LBA 0 (only when it holds no
// protective MBR), the two headers and the two entry arrays; change
// attribute bits other than those it documents; write a table it has not
// validated. It does no network I/O and knows nothing of images or updates.
//
// Changing a real disk goes through [OpenDisk] and [Disk.Update] (or
// [Disk.Format] for a new image): open, lock, re-read, apply a pure edit,
// validate, write, unlock, in one place, which also works out the active
// set (from /sys on the running host, where an operator's contrary claim
// is refused). signpost, imgbuild, updog and the boot selector all use it.
//
// Concurrency: a *Table is a plain value, and Read, Write and the edit
// functions do not lock. A [Disk] does: every table write holds an
// exclusive BSD flock(2) on the whole-disk device node or image file for
// its whole read-modify-write (systemd's "Locking Block Device Access"
// convention, which udev honours), readers hold a shared one, and a writer
// that cannot get the lock within a bounded wait fails with an error
// matching flock.ErrLocked. Write a disk others may see only through a
// Disk.
package gptprio
