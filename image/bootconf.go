package image

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The boot configuration is the file /boot.conf at the top of a BOOT
// partition's ext4 file system. The boot selector (the boot chain's next
// stage) mounts the BOOT partition of the set gptprio chose, reads this
// file, and boots Kernel with Initrd (when there is one) and the command
// line, after replacing $boot_uuid in it with the unique partition GUID
// of that BOOT partition. ROOT and HASH are found from it as Bottlerocket's
// GRUB configuration finds them, with PARTNROFF=1 and PARTNROFF=2 (the
// partitions after BOOT): so one boot image serves set A and set B alike,
// and the dm-verity table in the command line is the one of the root
// image released with it.
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
//	cmdline=root=/dev/dm-0 rootwait ro rootfstype=ext4 dm-mod.create=root,,,ro,0 <sectors> verity 1 PARTUUID=$boot_uuid/PARTNROFF=1 PARTUUID=$boot_uuid/PARTNROFF=2 4096 4096 <blocks> 1 sha256 <root hash> <salt> 2 restart_on_corruption ignore_zero_blocks ...
//
// Each key appears at most once; unknown keys are an error for format 1
// (a reader must not boot what it does not understand); a later format
// number means the same. Paths are relative to the file system's top.

// BootConfigName is the boot configuration's path in the BOOT file system.
const BootConfigName = "boot.conf"

// MaxBootConfig bounds the boot configuration a reader accepts.
const MaxBootConfig = 64 << 10

// BootUUIDVar is what the boot selector replaces with the BOOT
// partition's unique GUID.
const BootUUIDVar = "$boot_uuid"

// ErrBootConfig means a boot configuration cannot be read.
var ErrBootConfig = errors.New("image: bad boot configuration")

// BootConfig is the content of /boot.conf.
type BootConfig struct {
	Format                       int
	Name, Variant, Arch, Version string
	Kernel                       string
	Initrd                       string // "" when there is none
	RootFS                       string
	RootHash                     string
	Salt                         string // hex; "-" for none
	Cmdline                      string // with $boot_uuid
}

var bootConfigKeys = []string{"format", "name", "variant", "arch", "version", "kernel", "initrd", "root_fs", "root_hash", "salt", "cmdline"}

func (c *BootConfig) field(key string) *string {
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

// MarshalText writes the file.
func (c BootConfig) MarshalText() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# updog boot configuration: see the image package's documentation.\n")
	b.WriteString("# $boot_uuid is the unique partition GUID of the BOOT partition holding this file.\n")
	for _, k := range bootConfigKeys {
		v := strconv.Itoa(c.Format)
		if k != "format" {
			v = *c.field(k)
		}
		if v == "" && k == "initrd" {
			continue
		}
		if strings.ContainsAny(v, "\n\r\x00") {
			return nil, fmt.Errorf("%w: %s has a line break or NUL", ErrBootConfig, k)
		}
		fmt.Fprintf(&b, "%s=%s\n", k, v)
	}
	return b.Bytes(), nil
}

// ParseBootConfig reads a boot configuration and checks it is complete.
func ParseBootConfig(data []byte) (*BootConfig, error) {
	if len(data) > MaxBootConfig {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrBootConfig, len(data), MaxBootConfig)
	}
	c := &BootConfig{}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), MaxBootConfig)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return nil, fmt.Errorf("%w: line %d has no '='", ErrBootConfig, line)
		}
		if seen[k] {
			return nil, fmt.Errorf("%w: line %d: %s given twice", ErrBootConfig, line, k)
		}
		seen[k] = true
		if k == "format" {
			n, err := strconv.Atoi(v)
			if err != nil || n != 1 {
				return nil, fmt.Errorf("%w: format %q (this reader knows format 1)", ErrBootConfig, v)
			}
			c.Format = n
			continue
		}
		f := c.field(k)
		if f == nil {
			return nil, fmt.Errorf("%w: line %d: unknown key %q", ErrBootConfig, line, k)
		}
		*f = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBootConfig, err)
	}
	if c.Format == 0 {
		return nil, fmt.Errorf("%w: no format line", ErrBootConfig)
	}
	for _, k := range bootConfigKeys {
		if k != "format" && k != "initrd" && *c.field(k) == "" {
			return nil, fmt.Errorf("%w: %s is missing", ErrBootConfig, k)
		}
	}
	for _, p := range []string{c.Kernel, c.Initrd} {
		if strings.HasPrefix(p, "/") || strings.Contains("/"+p+"/", "/../") {
			return nil, fmt.Errorf("%w: path %q is not inside the file system", ErrBootConfig, p)
		}
	}
	return c, nil
}

// KernelCmdline is the command line with $boot_uuid replaced by the
// given partition GUID.
func (c *BootConfig) KernelCmdline(bootPartUUID string) string {
	return strings.ReplaceAll(c.Cmdline, BootUUIDVar, bootPartUUID)
}
