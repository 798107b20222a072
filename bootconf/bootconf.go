// Package bootconf is the boot configuration format: the file boot.conf at
// the top of a BOOT partition's file system, written by the image builder
// and read by the boot selector (cmd/bootsel).
//
// The boot selector mounts the BOOT partition of the set gptprio chose,
// reads this file, and boots Kernel with Initrd (when there is one) and the
// command line, after replacing $boot_uuid in it with the unique partition
// GUID of that BOOT partition ([Config.KernelCmdline]). ROOT and HASH are
// named from it as Bottlerocket's GRUB configuration names them,
// PARTUUID=$boot_uuid/PARTNROFF=1 and =2 (the partitions after BOOT,
// [PartRef]): so one boot image serves set A and set B alike, and the
// dm-verity table in the command line is the one of the root image released
// with it.
//
// Format 1, all text, UTF-8:
//
//	# comment lines start with '#'; blank lines are ignored
//	format=1
//	name=updog
//	variant=aws-dev
//	arch=x86_64
//	version=1.2.0
//	kernel=vmlinuz
//	initrd=initrd.img                  (absent when there is none)
//	root_fs=ext4
//	root_hash=<hex>
//	salt=<hex, or - for none>
//	cmdline=root=/dev/dm-0 rootwait ro rootfstype=ext4 dm-mod.waitfor=... dm-mod.create="root,,,ro,0 <sectors> verity 1 PARTUUID=$boot_uuid/PARTNROFF=1 PARTUUID=$boot_uuid/PARTNROFF=2 4096 4096 <blocks> 1 sha256 <root hash> <salt> 2 restart_on_corruption ignore_zero_blocks" ...
//
// Each key appears at most once; unknown keys are an error for format 1
// (a reader must not boot what it does not understand); a later format
// number means the same. Paths are relative to the file system's top and
// never climb out of it.
//
// What it trusts: nothing; Parse bounds what it reads (MaxSize) and checks
// every line. It is pure (no I/O) and imports only the standard library, so
// the boot selector links nothing else through it.
package bootconf

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// FileName is the boot configuration's path in the BOOT file system.
const FileName = "boot.conf"

// MaxSize bounds the boot configuration a reader accepts.
const MaxSize = 64 << 10

// BootUUIDVar is what the boot selector replaces with the BOOT partition's
// unique GUID.
const BootUUIDVar = "$boot_uuid"

// ErrInvalid means a boot configuration cannot be read or written.
var ErrInvalid = errors.New("bootconf: bad boot configuration")

// ErrPartRef means a device reference is not of the PARTUUID=/PARTNROFF=
// form.
var ErrPartRef = errors.New("bootconf: bad partition reference")

// Config is the content of boot.conf.
type Config struct {
	Format                       int
	Name, Variant, Arch, Version string
	Kernel                       string
	Initrd                       string // "" when there is none
	RootFS                       string
	RootHash                     string
	Salt                         string // hex; "-" for none
	Cmdline                      string // with $boot_uuid
}

var keys = []string{"format", "name", "variant", "arch", "version", "kernel", "initrd", "root_fs", "root_hash", "salt", "cmdline"}

func (c *Config) field(key string) *string {
	switch key {
	case "name":
		return &c.Name
	case "variant":
		return &c.Variant
	case "arch":
		return &c.Arch
	case "version":
		return &c.Version
	case "kernel":
		return &c.Kernel
	case "initrd":
		return &c.Initrd
	case "root_fs":
		return &c.RootFS
	case "root_hash":
		return &c.RootHash
	case "salt":
		return &c.Salt
	case "cmdline":
		return &c.Cmdline
	}
	return nil
}

// MarshalText writes the file. A value holding a line break or a NUL is
// refused (it would end the line and smuggle in another key).
func (c Config) MarshalText() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# updog boot configuration: see the bootconf package's documentation.\n")
	b.WriteString("# $boot_uuid is the unique partition GUID of the BOOT partition holding this file.\n")
	for _, k := range keys {
		v := strconv.Itoa(c.Format)
		if k != "format" {
			v = *c.field(k)
		}
		if v == "" && k == "initrd" {
			continue
		}
		if strings.ContainsAny(v, "\n\r\x00") {
			return nil, fmt.Errorf("%w: %s has a line break or NUL", ErrInvalid, k)
		}
		fmt.Fprintf(&b, "%s=%s\n", k, v)
	}
	return b.Bytes(), nil
}

// Parse reads a boot configuration and checks it is complete: format 1,
// every key but initrd present, each once, no unknown key, no NUL or
// carriage return inside a line, and kernel and initrd paths inside the
// file system. Errors match ErrInvalid.
func Parse(data []byte) (*Config, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrInvalid, len(data), MaxSize)
	}
	c := &Config{}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxSize)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("%w: line %d has no '='", ErrInvalid, line)
		}
		if strings.ContainsAny(s, "\r\x00") {
			// A NUL would cut a C string short; neither could be
			// written back (MarshalText refuses them).
			return nil, fmt.Errorf("%w: line %d holds a carriage return or NUL", ErrInvalid, line)
		}
		if seen[k] {
			return nil, fmt.Errorf("%w: line %d: %s given twice", ErrInvalid, line, k)
		}
		seen[k] = true
		if k == "format" {
			n, err := strconv.Atoi(v)
			if err != nil || n != 1 {
				return nil, fmt.Errorf("%w: format %q (this reader knows format 1)", ErrInvalid, v)
			}
			c.Format = n
			continue
		}
		f := c.field(k)
		if f == nil {
			return nil, fmt.Errorf("%w: line %d: unknown key %q", ErrInvalid, line, k)
		}
		*f = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if c.Format == 0 {
		return nil, fmt.Errorf("%w: no format line", ErrInvalid)
	}
	for _, k := range keys {
		if k != "format" && k != "initrd" && *c.field(k) == "" {
			return nil, fmt.Errorf("%w: %s is missing", ErrInvalid, k)
		}
	}
	for _, p := range []string{c.Kernel, c.Initrd} {
		if strings.HasPrefix(p, "/") || strings.Contains("/"+p+"/", "/../") {
			return nil, fmt.Errorf("%w: path %q is not inside the file system", ErrInvalid, p)
		}
	}
	return c, nil
}

// KernelCmdline is the command line with $boot_uuid replaced by the given
// partition GUID (the canonical text form, as gptprio.GUID.String gives).
func (c *Config) KernelCmdline(bootPartUUID string) string {
	return strings.ReplaceAll(c.Cmdline, BootUUIDVar, bootPartUUID)
}

// PartRef is how the command line names the partition offset partitions
// after the BOOT partition holding boot.conf: PARTUUID=$boot_uuid/PARTNROFF=n
// (ROOT is 1, HASH is 2).
func PartRef(offset int) string {
	return "PARTUUID=" + BootUUIDVar + "/PARTNROFF=" + strconv.Itoa(offset)
}

// ParsePartRef splits a device reference of the kernel's form
// PARTUUID=<guid>[/PARTNROFF=<n>] (after $boot_uuid was replaced) into the
// partition GUID (lower-cased) and the offset (0 without PARTNROFF). Errors
// match ErrPartRef.
func ParsePartRef(s string) (uuid string, offset int, err error) {
	rest, ok := strings.CutPrefix(s, "PARTUUID=")
	if !ok {
		return "", 0, fmt.Errorf("%w: %q does not start with PARTUUID=", ErrPartRef, s)
	}
	uuid, off, hasOff := strings.Cut(rest, "/")
	if !isGUID(uuid) {
		return "", 0, fmt.Errorf("%w: %q: %q is not a partition GUID", ErrPartRef, s, uuid)
	}
	if hasOff {
		n, ok := strings.CutPrefix(off, "PARTNROFF=")
		if !ok {
			return "", 0, fmt.Errorf("%w: %q: want /PARTNROFF=<n> after the GUID", ErrPartRef, s)
		}
		v, err := strconv.Atoi(n)
		if err != nil || v < -127 || v > 127 || n != strconv.Itoa(v) {
			return "", 0, fmt.Errorf("%w: %q: PARTNROFF %q is not a small integer", ErrPartRef, s, n)
		}
		offset = v
	}
	return strings.ToLower(uuid), offset, nil
}

func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
