// Package verity builds, verifies and describes dm-verity hash trees
// (format version 1, the layout of the Linux kernel and of cryptsetup's
// veritysetup), byte for byte as veritysetup writes them.
//
// Layout of a hash device: at the hash offset an optional 512-byte
// superblock, in a hash block of its own; then the hash tree, its levels from
// the top (one block) down to level 0, whose entries are the digests of the
// data blocks. Each entry is hash(salt || block), padded with zeros to a
// power-of-two stride; the root hash is hash(salt || top block). A device of
// a single data block has no tree: its root hash is that block's digest.
//
// What it owns: the tree geometry, the superblock, building a tree from data
// streaming past ([Builder]; the bottom level is hashed on every core),
// checking data streaming past against a stored tree ([Checker],
// [VerifyStream]; also on every core) or a stored tree against data
// ([Verify], [Tree.Check]) with the first bad block reported exactly as
// veritysetup reports it, and the kernel's table line ([Info.Table],
// [Info.KernelParam]).
//
// What it trusts: nothing read from a device; superblocks are validated field
// by field ([ParseSuperblock]), and a Checker checks every hash block it
// reads against the root, including when it reads it again. What it must
// never do: read or write outside the data and hash ranges it was given, or
// hold the data in memory. A Builder, and so Build, Format and Verify, holds
// the tree (about 8 MiB per GiB of data with 4096-byte blocks and sha256); a
// Checker, and so VerifyStream, holds a few MiB (at most about 9 MiB, most
// of it data in flight to its workers) whatever the size of the data.
//
// Cancellation: [Build], [Format], [Verify], [VerifyStream], [NewChecker]
// (for the Checker's whole life) and [Tree.Check] take a context and stop
// with its error (wrapped) once it is done; Format writes nothing before the
// whole tree is built, so a cancelled Format leaves the hash device
// untouched.
//
// Concurrency: a Builder or a Checker is for one goroutine (each starts
// workers of its own); a finished Tree may be read from several goroutines.
package verity
