//go:build !unix

package safefile

import "os"

func openNonblock(path string, flag int) (*os.File, error) { return os.OpenFile(path, flag, 0) }

func setBlocking(*os.File) error { return nil }
