package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/updog/updog/internal/atomicfile"
	"github.com/updog/updog/internal/blockdev"
	"github.com/updog/updog/internal/cli"
	"github.com/updog/updog/verity"
)

// exitCorrupt is verify's exit status when the data or tree is bad.
const exitCorrupt = 3

const verityUsage = `Usage: imgbuild verity COMMAND [options]

Commands:
  format DATA HASH            build the hash tree of DATA into HASH; print the root hash
  verify DATA HASH ROOTHASH   check DATA and HASH against ROOTHASH
  dump HASH                   print the superblock of HASH

Defaults match veritysetup format: sha256, 4096-byte blocks, a random 32-byte
salt and UUID, superblock kept. Exit status: 0 success, 1 error, 2 usage
error, 3 verification failed (the first bad block is named).
`

func runVerity(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("verity: a command is needed\n\n%s", verityUsage)
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, verityUsage)
		return errHelp
	case "format":
		return verityFormat(ctx, args[1:], stdout)
	case "verify":
		return verityVerify(ctx, args[1:], stdout)
	case "dump":
		return verityDump(ctx, args[1:], stdout)
	}
	return usagef("verity: unknown command %q\n\n%s", args[0], verityUsage)
}

// paramFlags registers the tree parameters shared by format and verify.
type paramFlags struct {
	hash         string
	dbs, hbs     int
	salt         string
	noSalt       bool
	uuid         string
	noSuperblock bool
	hashOffset   int64
	dataBlocks   uint64
}

func (f *paramFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.hash, "hash", "sha256", "hash algorithm: sha256, sha1 or sha512")
	fs.IntVar(&f.dbs, "data-block-size", 4096, "data block size in bytes (512-4096, a power of two)")
	fs.IntVar(&f.hbs, "hash-block-size", 4096, "hash block size in bytes (512-4096, a power of two)")
	fs.StringVar(&f.salt, "salt", "", "salt as `HEX` (default: 32 random bytes; - for none)")
	fs.BoolVar(&f.noSalt, "no-salt", false, "use no salt")
	fs.StringVar(&f.uuid, "uuid", "", "UUID recorded in the superblock (default: random)")
	fs.BoolVar(&f.noSuperblock, "no-superblock", false, "write no superblock (verify then needs every parameter)")
	fs.Int64Var(&f.hashOffset, "hash-offset", 0, "byte offset of the superblock or tree in HASH (a multiple of 512)")
	fs.Uint64Var(&f.dataBlocks, "data-blocks", 0, "data blocks to cover (default: every whole block of DATA)")
}

func (f *paramFlags) params(randomize bool) (verity.Params, error) {
	p := verity.Params{Hash: f.hash, DataBlockSize: f.dbs, HashBlockSize: f.hbs, NoSuperblock: f.noSuperblock,
		HashOffset: f.hashOffset, DataBlocks: f.dataBlocks}
	switch {
	case f.noSalt && f.salt != "":
		return p, usagef("--salt and --no-salt contradict each other")
	case f.noSalt || f.salt == "-":
	case f.salt != "":
		s, err := hex.DecodeString(f.salt)
		if err != nil {
			return p, usagef("--salt %q is not hex", f.salt)
		}
		p.Salt = s
	case randomize:
		p.Salt = make([]byte, 32)
		rand.Read(p.Salt)
	}
	switch {
	case f.uuid != "":
		u, err := verity.ParseUUID(f.uuid)
		if err != nil {
			return p, usagef("--uuid: %v", err)
		}
		p.UUID = u
	case randomize:
		rand.Read(p.UUID[:])
		p.UUID[6] = p.UUID[6]&0x0f | 0x40
		p.UUID[8] = p.UUID[8]&0x3f | 0x80
	}
	if err := p.Validate(); err != nil {
		return p, usagef("%v", err)
	}
	return p, nil
}

func verityFormat(ctx context.Context, args []string, stdout io.Writer) error {
	fs, parse := newFlags("verity format", "[options] DATA HASH", stdout)
	var pf paramFlags
	pf.register(fs)
	asJSON := fs.Bool("json", false, "print every parameter as JSON")
	if err := parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return usagef("verity format: DATA and HASH are needed")
	}
	p, err := pf.params(true)
	if err != nil {
		return err
	}
	dataPath, hashPath := fs.Arg(0), fs.Arg(1)
	data, err := blockdev.Open(dataPath, blockdev.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("opening data: %w", err)
	}
	defer data.Close()
	dest, err := hashTargetFor(hashPath, p)
	if err != nil {
		return err
	}
	if err := checkOverlap(dataPath, hashPath, p); err != nil {
		return err
	}
	// A hash device written in place is opened before the hashing, so
	// that a wrong HASH fails at once rather than after it.
	var inPlace *blockdev.File
	if !dest.replace {
		if inPlace, err = blockdev.Open(hashPath, blockdev.Options{}); err != nil {
			return fmt.Errorf("opening hash device: %w", err)
		}
		defer inPlace.Close()
	}
	prog := cli.NewProgress(os.Stderr)
	prog.Start("hashing "+dataPath, data.Size())
	t, err := verity.Build(ctx, prog.ReaderAt(data), data.Size(), p)
	prog.Finish()
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted before writing anything to %s: %w", hashPath, err)
		}
		return err
	}
	if err := writeTree(ctx, t, dest, inPlace); err != nil {
		return err
	}
	if *asJSON {
		return cli.WriteJSON(stdout, infoJSON(t, dataPath, hashPath))
	}
	if t.Uncovered > 0 {
		fmt.Fprintf(os.Stderr, "imgbuild: note: the last %d bytes of %s are not a whole data block and are not covered\n", t.Uncovered, dataPath)
	}
	fmt.Fprintf(stdout, "%x\n", t.RootHash)
	return nil
}

// hashTarget is how format writes HASH.
type hashTarget struct {
	// replace: build a temporary file beside path and rename it over path
	// (internal/atomicfile), so a failed or interrupted format leaves no
	// new file and an existing one unchanged. Otherwise the tree is written
	// in place into HASH: a block device, or an existing file the tree
	// goes inside at --hash-offset.
	replace bool
	path    string      // for replace: the file to replace, symbolic links resolved
	perm    os.FileMode // for replace: the new file's permissions
}

// newHashPerm is the permission of a hash file format creates.
const newHashPerm = 0o644

// hashTargetFor decides how HASH is written: a new file, or an existing
// regular file written from offset 0, is replaced whole; anything else is
// written in place (and blockdev.Open refuses what is neither a regular
// file nor a block device).
func hashTargetFor(hashPath string, p verity.Params) (hashTarget, error) {
	fi, err := os.Stat(hashPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if li, lerr := os.Lstat(hashPath); lerr == nil && li.Mode()&os.ModeSymlink != 0 {
			return hashTarget{}, fmt.Errorf("hash file %s is a symbolic link to a file that does not exist", hashPath)
		}
		// Fail now, not after the hashing, when the file cannot be made.
		if di, err := os.Stat(filepath.Dir(hashPath)); err != nil || !di.IsDir() {
			return hashTarget{}, fmt.Errorf("hash file %s: its directory does not exist", hashPath)
		}
		return hashTarget{replace: true, path: hashPath, perm: newHashPerm}, nil
	case err != nil:
		return hashTarget{}, fmt.Errorf("hash file: %w", err)
	case fi.Mode().IsRegular() && p.HashOffset == 0:
		// Through a symbolic link, the link's target is replaced and the
		// link stays.
		real, err := filepath.EvalSymlinks(hashPath)
		if err != nil {
			return hashTarget{}, fmt.Errorf("hash file: %w", err)
		}
		return hashTarget{replace: true, path: real, perm: fi.Mode().Perm()}, nil
	}
	return hashTarget{path: hashPath}, nil
}

// checkOverlap refuses a HASH that is DATA itself, by any name (the same
// path, a symbolic or hard link, another node of the same block device),
// unless --data-blocks ends the data area [0, data_blocks*data_block_size)
// at or before the hash offset: the tree would be written over the data.
// veritysetup refuses the same ("Data area overlaps with hash area").
// Without --data-blocks the data is the whole of DATA, which the tree,
// written at or past its end, would then change.
func checkOverlap(dataPath, hashPath string, p verity.Params) error {
	if !blockdev.SameFile(dataPath, hashPath) {
		return nil
	}
	if p.DataBlocks == 0 {
		return usagef("verity format: HASH %s is the same file as DATA %s: the hash tree would be written over the data "+
			"(to keep both in one file, give --data-blocks and a --hash-offset at or past the data's end)", hashPath, dataPath)
	}
	dbs := uint64(p.DataBlockSize)
	if p.DataBlocks > uint64(p.HashOffset)/dbs {
		return usagef("verity format: HASH %s is the same file as DATA %s and the hash offset %d is inside the data "+
			"(%d blocks of %d bytes end at byte %d): the hash tree would be written over the data",
			hashPath, dataPath, p.HashOffset, p.DataBlocks, dbs, p.DataBlocks*dbs)
	}
	return nil
}

// writeTree writes the built tree to HASH as dest says: through a
// temporary file renamed over it, or in place into inPlace.
func writeTree(ctx context.Context, t *verity.Tree, dest hashTarget, inPlace *blockdev.File) error {
	if dest.replace {
		err := atomicfile.Write(dest.path, dest.perm, func(w io.Writer) error {
			wa, ok := w.(io.WriterAt)
			if !ok {
				return fmt.Errorf("temporary file %T cannot be written at offsets", w)
			}
			return t.WriteTo(ctxWriterAt{ctx, wa})
		})
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("interrupted, %s left as it was: %w", dest.path, err)
		}
		return err
	}
	// A block device never grows: refuse before writing anything.
	if inPlace.IsBlockDevice() && t.HashDeviceSize > inPlace.Size() {
		return fmt.Errorf("hash device %s has %d bytes, the tree needs %d", inPlace.Name(), inPlace.Size(), t.HashDeviceSize)
	}
	if err := t.WriteTo(inPlace); err != nil {
		return err
	}
	if err := inPlace.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", inPlace.Name(), err)
	}
	return nil
}

// ctxWriterAt fails its writes once ctx is done (for the temporary file,
// which is then removed: nothing is lost by stopping part-way).
type ctxWriterAt struct {
	ctx context.Context
	w   io.WriterAt
}

func (c ctxWriterAt) WriteAt(p []byte, off int64) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.WriteAt(p, off)
}

func infoJSON(t *verity.Tree, dataPath, hashPath string) map[string]any {
	return map[string]any{
		"root_hash":        hex.EncodeToString(t.RootHash),
		"hash":             t.Hash,
		"salt":             hex.EncodeToString(t.Salt),
		"uuid":             verity.FormatUUID(t.UUID),
		"data_block_size":  t.DataBlockSize,
		"hash_block_size":  t.HashBlockSize,
		"data_blocks":      t.DataBlocks,
		"hash_blocks":      t.HashBlocks,
		"superblock":       !t.NoSuperblock,
		"hash_offset":      t.HashOffset,
		"hash_start":       t.HashStart,
		"hash_device_size": t.HashDeviceSize,
		"uncovered_bytes":  t.Uncovered,
		"dm_table":         t.Table(dataPath, hashPath),
		"dm_mod_create": t.KernelParam("root", "PARTUUID=$boot_uuid/PARTNROFF=1", "PARTUUID=$boot_uuid/PARTNROFF=2",
			verity.BottlerocketOptions...),
	}
}

func verityVerify(ctx context.Context, args []string, stdout io.Writer) error {
	fs, parse := newFlags("verity verify", "[options] DATA HASH ROOTHASH", stdout)
	var pf paramFlags
	pf.register(fs)
	if err := parse(args); err != nil {
		return err
	}
	if fs.NArg() != 3 {
		return usagef("verity verify: DATA, HASH and ROOTHASH are needed")
	}
	data, err := blockdev.Open(fs.Arg(0), blockdev.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("opening data: %w", err)
	}
	defer data.Close()
	hash, err := blockdev.Open(fs.Arg(1), blockdev.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("opening hash device: %w", err)
	}
	defer hash.Close()
	var p verity.Params
	if pf.noSuperblock {
		if p, err = pf.params(false); err != nil {
			return err
		}
	} else {
		sb, err := verity.ReadSuperblock(hash, pf.hashOffset)
		if err != nil {
			return fmt.Errorf("%s: %w", fs.Arg(1), err)
		}
		p = sb.Params(pf.hashOffset)
	}
	root, err := verity.ParseRootHash(strings.TrimSpace(fs.Arg(2)), p.Hash)
	if err != nil {
		return usagef("verity verify: %v", err)
	}
	prog := cli.NewProgress(os.Stderr)
	prog.Start("verifying "+fs.Arg(0), data.Size())
	err = verity.Verify(ctx, prog.ReaderAt(data), data.Size(), hash, p, root)
	prog.Finish()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("interrupted: %w", err)
		}
		var me *verity.MismatchError
		if errors.As(err, &me) || errors.Is(err, verity.ErrRootHashMismatch) {
			return &cli.ExitError{Code: exitCorrupt, Err: fmt.Errorf("verification failed: %w", err)}
		}
		return err
	}
	fmt.Fprintf(stdout, "%s and %s verify against root hash %x\n", fs.Arg(0), fs.Arg(1), root)
	return nil
}

func verityDump(_ context.Context, args []string, stdout io.Writer) error {
	fs, parse := newFlags("verity dump", "[--hash-offset N] [--json] HASH", stdout)
	off := fs.Int64("hash-offset", 0, "byte offset of the superblock in HASH")
	asJSON := fs.Bool("json", false, "print the fields as JSON")
	if err := parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("verity dump: HASH is needed")
	}
	hash, err := blockdev.Open(fs.Arg(0), blockdev.Options{ReadOnly: true})
	if err != nil {
		return err
	}
	defer hash.Close()
	sb, err := verity.ReadSuperblock(hash, *off)
	if err != nil {
		return fmt.Errorf("%s: %w", fs.Arg(0), err)
	}
	salt := hex.EncodeToString(sb.Salt)
	if salt == "" {
		salt = "-"
	}
	if *asJSON {
		return cli.WriteJSON(stdout, map[string]any{"uuid": verity.FormatUUID(sb.UUID), "hash_type": 1, "hash": sb.Hash,
			"data_blocks": sb.DataBlocks, "data_block_size": sb.DataBlockSize, "hash_block_size": sb.HashBlockSize, "salt": salt})
	}
	fmt.Fprintf(stdout, "VERITY header information for %s\n", fs.Arg(0))
	for _, kv := range [][2]string{
		{"UUID", verity.FormatUUID(sb.UUID)}, {"Hash type", "1"}, {"Data blocks", fmt.Sprint(sb.DataBlocks)},
		{"Data block size", fmt.Sprint(sb.DataBlockSize)}, {"Hash block size", fmt.Sprint(sb.HashBlockSize)},
		{"Hash algorithm", sb.Hash}, {"Salt", salt},
	} {
		fmt.Fprintf(stdout, "%-17s\t%s\n", kv[0]+":", kv[1])
	}
	return nil
}
