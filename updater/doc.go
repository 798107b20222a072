// Package updater is the host side of updog: it checks a TUF repository for
// the release this host should run, writes that release's boot, root and
// hash images into the inactive partition set, verifies every byte, and
// switches the boot priority to it; it marks a booted set good after health
// checks, rolls back, and reports status.
//
// What it owns: the order of an update and its commit point. An update
// runs: clear the inactive set's boot bits (a GPT write: from here the
// inactive set cannot boot) → stream each image from the repository,
// checked against its signed length and sha256 while it is decompressed
// and written, never past its partition's end → sync → read everything
// back and verify it (sha256 of the boot and hash images, the dm-verity
// tree of the root image against the hash image and the root hash) → one
// GPT write that gives the inactive set its tries and the higher priority.
// That last write is the commit point: a crash before it leaves the host
// booting the old set; after it, the new set is tried and, if it is never
// marked good, the bootloader falls back to the old one.
//
// What it must never do: write to the active set's partitions, whatever
// the manifest, the disk or the flags say (every write goes through a
// window of an inactive partition, checked against the active set's
// ranges); trust a byte of a target before its signed hash matched; hold
// an image in memory (memory is bounded whatever the image size).
//
// What it remembers, in the state directory: the trusted TUF metadata
// (rollback and freeze protection across runs), what each set holds, the
// pending update, the last attempt and the releases that failed to boot
// here (skipped from then on unless asked for by name).
//
// Concurrency: one Updater per process; the state directory's lock keeps a
// second updog from changing the disk at the same time, and the disk's
// flock serialises partition table writes with signpost and others.
package updater
