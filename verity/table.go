package verity

import (
	"encoding/hex"
	"fmt"
	"strings"
)

// BottlerocketOptions are the optional table arguments Bottlerocket uses.
var BottlerocketOptions = []string{"restart_on_corruption", "ignore_zero_blocks"}

// Table returns the device-mapper table line for the device:
//
//	0 <sectors> verity 1 <data_dev> <hash_dev> <dbs> <hbs> <blocks> <hash_start> <alg> <root> <salt> [<n> <opt>...]
//
// with "-" for an empty salt.
func (i Info) Table(dataDev, hashDev string, opts ...string) string {
	salt := "-"
	if len(i.Salt) > 0 {
		salt = hex.EncodeToString(i.Salt)
	}
	sectors := i.DataBlocks * uint64(i.DataBlockSize) / 512
	line := fmt.Sprintf("0 %d verity 1 %s %s %d %d %d %d %s %x %s", sectors, dataDev, hashDev,
		i.DataBlockSize, i.HashBlockSize, i.DataBlocks, i.HashStart, i.Hash, i.RootHash, salt)
	if len(opts) > 0 {
		line += fmt.Sprintf(" %d %s", len(opts), strings.Join(opts, " "))
	}
	return line
}

// KernelParam returns the dm-mod.create= kernel parameter that makes the
// device at boot, read-only, as Bottlerocket writes it in its GRUB
// configuration:
//
//	dm-mod.create=<name>,,,ro,<table>
func (i Info) KernelParam(name, dataDev, hashDev string, opts ...string) string {
	return fmt.Sprintf("dm-mod.create=%s,,,ro,%s", name, i.Table(dataDev, hashDev, opts...))
}
