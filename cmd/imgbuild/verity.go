package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"

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

func verityFormat(_ context.Context, args []string, stdout io.Writer) error {
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
	data, err := blockdev.Open(fs.Arg(0), blockdev.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("opening data: %w", err)
	}
	defer data.Close()
	hashPath := fs.Arg(1)
	if _, err := os.Stat(hashPath); errors.Is(err, os.ErrNotExist) {
		if err := os.WriteFile(hashPath, nil, 0o644); err != nil {
			return err
		}
	}
	hash, err := blockdev.Open(hashPath, blockdev.Options{})
	if err != nil {
		return fmt.Errorf("opening hash device: %w", err)
	}
	defer hash.Close()
	prog := cli.NewProgress(os.Stderr)
	prog.Start("hashing "+fs.Arg(0), data.Size())
	t, err := verity.Format(prog.ReaderAt(data), data.Size(), hash, p)
	prog.Finish()
	if err != nil {
		return err
	}
	if err := hash.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", hashPath, err)
	}
	if *asJSON {
		return cli.WriteJSON(stdout, infoJSON(t, fs.Arg(0), hashPath))
	}
	if t.Uncovered > 0 {
		fmt.Fprintf(os.Stderr, "imgbuild: note: the last %d bytes of %s are not a whole data block and are not covered\n", t.Uncovered, fs.Arg(0))
	}
	fmt.Fprintf(stdout, "%x\n", t.RootHash)
	return nil
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

func verityVerify(_ context.Context, args []string, stdout io.Writer) error {
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
	err = verity.Verify(prog.ReaderAt(data), data.Size(), hash, p, root)
	prog.Finish()
	if err != nil {
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
