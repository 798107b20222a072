//go:build !linux

package image

import (
	"errors"
	"os"
)

func nextData(*os.File, int64) (int64, bool, bool) { return 0, false, true }

func nextHole(*os.File, int64) (int64, error) { return 0, errors.ErrUnsupported }

func mknodat(*os.File, string, uint32, uint32, uint32) error {
	return errors.New("making device nodes and FIFOs is supported on Linux only")
}

const (
	modeChar  = 0o020000
	modeBlock = 0o060000
	modeFIFO  = 0o010000
)
