package image

import "github.com/updog/updog/bootconf"

// The boot configuration (boot.conf in the BOOT file system) is package
// bootconf's: the format is shared with the boot selector, which must not
// link this package. These names keep the image package's API.

// BootConfigName is the boot configuration's path in the BOOT file system.
const BootConfigName = bootconf.FileName

// MaxBootConfig bounds the boot configuration a reader accepts.
const MaxBootConfig = bootconf.MaxSize

// BootUUIDVar is what the boot selector replaces with the BOOT
// partition's unique GUID.
const BootUUIDVar = bootconf.BootUUIDVar

// ErrBootConfig means a boot configuration cannot be read.
var ErrBootConfig = bootconf.ErrInvalid

// BootConfig is the content of boot.conf.
type BootConfig = bootconf.Config

// ParseBootConfig reads a boot configuration and checks it is complete.
func ParseBootConfig(data []byte) (*BootConfig, error) { return bootconf.Parse(data) }
