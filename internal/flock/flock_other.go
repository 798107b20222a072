//go:build !unix

package flock

import (
	"errors"
	"os"
)

var errWouldBlock = errors.New("would block")

func tryLock(*os.File, Mode) error { return errors.New("flock: not supported on this system") }

func unlock(*os.File) error { return nil }
