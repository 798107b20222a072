// Package delta is the pure core of delta updates: the index of a
// release's seekable root image (.didx), the ids that let a host find the
// index's frames in images it already has, and the planner that says which
// frames are copied from where and which are fetched, in which ranges.
//
// # What a release publishes
//
// The root image is compressed a second time as a seekable zstd file:
// independent frames of FrameSize (64 KiB) of output each, followed by the
// zstd seekable-format seek table in a skippable frame (so plain `zstd -dc`
// decodes it). The index describes that file: the block size (4 KiB), the
// frame size, the hash and the salt, the name, length and sha256 of the
// seekable file, and for each frame its id and its compressed length. A
// frame's id is the sha256 of the concatenated digests of its blocks, each
// digest being hash(salt || block), dm-verity's digest: when the salt is
// the dm-verity salt (fixed per variant), a host's active hash partition
// already holds every block digest of its running root, in its level 0.
//
// # The appendix of mixed frames
//
// A file system that interleaves its metadata with the file data
// (mkfs.erofs puts a block of inodes among the data every ~2 MiB, and
// directories among the files) changes, when a file changes size, a
// block of metadata in frames all over the image: the file data of those
// frames moved by whole blocks and is still in the host's images, but no
// seed holds the frames whole. An index may carry an appendix (format
// version 2; an index without one is version 1, as before, and both are
// read): for each frame that mixes file data with other blocks
// (metadata, zeros), the digests of all its blocks (their sha256 is the
// frame id, which is how they are checked) and the blocks that are not
// file data, compressed together as one zstd frame (see Mixed). The
// builder tells file data from the rest without parsing the file system:
// a block is file data when it is a block of a file of the tree. The
// appendix is bounded (MaxAppendixBytes; the builder takes at most a
// fiftieth of the image).
//
// # What a host does with it
//
// A seed is an image the host has (its active root, its inactive root's
// old contents and whatever an interrupted attempt wrote there), seen as
// the stream of its block digests. The planner slides a window of one
// frame's blocks over each seed, one block at a time, and looks every
// window's id up in a compact table of the index's frame ids (keyed by an
// 8-byte prefix, each hit confirmed against the full id): a match is a
// frame the host can copy instead of download. The missing frames form
// runs of the seekable file; runs separated by small gaps are merged, so a
// handful of single-range requests fetch them.
//
// A frame found nowhere that has an appendix entry is assembled instead
// of fetched when every block of it that the entry does not carry is in a
// seed, as a single block at a block offset (looked up by its digest, in
// the same pass over the seeds: each block's digest is looked up in a
// table of the digests the appendix names); only when one is nowhere is
// the frame fetched.
//
// # What it trusts and what it must never do
//
// The index is trusted only after its signed length and sha256 (a TUF
// target) were checked; Parse still bounds every field, so a hostile index
// can neither panic nor make it allocate beyond about twice its own size.
// A seed is a hint: the planner never trusts a seed's digests, and the
// caller must re-read and check every copied frame against its id
// (FrameID) before writing it, and every fetched frame after decoding it
// with its output bounded to the frame's length. An assembled frame is
// checked block by block (every seed block read again against its
// digest, every appendix block decoded with the output bounded to the
// entry's blocks and checked against its digest: MixedBlocks) and then
// against its id, before anything of it is written; a frame that fails is
// fetched instead.
//
// The package does no I/O beyond the io.Reader and io.ReaderAt it is
// given: no network, no disks, no files. It never imports the updater,
// repo, image or net/http.
package delta
