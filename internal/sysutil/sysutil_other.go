//go:build !linux

package sysutil

import "errors"

// Reboot is supported on Linux only.
func Reboot() error { return errors.New("rebooting is supported on Linux only") }

// Sync does nothing off Linux.
func Sync() {}
