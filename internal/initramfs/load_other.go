//go:build !linux

package initramfs

import "errors"

func loadModule(string) (bool, error) { return false, errors.ErrUnsupported }
