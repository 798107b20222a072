//go:build !unix

package atomicfile

import "os"

// keepOwner does nothing where files have no Unix owner.
func keepOwner(*os.File, os.FileInfo) error { return nil }

// MatchOwner does nothing where files have no Unix owner.
func MatchOwner(string, os.FileInfo) error { return nil }
