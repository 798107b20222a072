//go:build !linux

package kexec

import (
	"errors"
	"os"
)

// Load fails: kexec is Linux's.
func Load(kernel, initrd *os.File, cmdline string) error { return errors.ErrUnsupported }

// Unload fails off Linux.
func Unload() error { return errors.ErrUnsupported }

// Exec fails off Linux.
func Exec() error { return errors.ErrUnsupported }
