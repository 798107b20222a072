//go:build !linux

package initramfs

import "errors"

// MountEarly is Linux's.
func MountEarly(string) error { return errors.ErrUnsupported }

// MountOptions are the options of Mount.
type MountOptions struct {
	ReadOnly, Inert bool
	Data            string
}

// Mount is Linux's.
func Mount(string, string, string, MountOptions) error { return errors.ErrUnsupported }

// Unmount is Linux's.
func Unmount(string) error { return errors.ErrUnsupported }

// SwitchRoot is Linux's.
func SwitchRoot(string, string, []string, []string) error { return errors.ErrUnsupported }

// PowerOff is Linux's.
func PowerOff() error { return errors.ErrUnsupported }

// Restart is Linux's.
func Restart() error { return errors.ErrUnsupported }

// MountTmpfs is Linux's.
func MountTmpfs(string) error { return errors.ErrUnsupported }
