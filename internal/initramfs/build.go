package initramfs

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"

	"github.com/updog/updog/internal/safefile"
)

// Spec describes an initramfs for the boot chain.
type Spec struct {
	// Init is the program the kernel runs as /init: a static binary (the
	// boot selector).
	Init string
	// ModulesDir is the kernel's modules tree (lib/modules/<version>);
	// "" carries no modules.
	ModulesDir string
	// Modules are the modules to carry and load at boot, by name, with
	// everything they depend on (ResolveModules).
	Modules []string
	// Files are more files to carry: archive path -> file on this host.
	Files map[string]string
	// Mtime is every entry's time (seconds since the epoch).
	Mtime uint32
}

// Write writes the initramfs Spec describes to w as an uncompressed newc
// cpio archive (the kernel unpacks it as it is; no compressor is needed at
// boot): dev/console, the directories the boot chain mounts on (dev, proc,
// sys, run, tmp), /init, the modules under lib/modules/<version>/ and the
// module list (ModuleListName) giving their load order. It returns the
// modules carried, in load order. The same Spec gives the same bytes.
func Write(w io.Writer, s Spec) ([]Module, error) {
	var mods []Module
	if s.ModulesDir != "" && len(s.Modules) > 0 {
		var err error
		if mods, err = ResolveModules(s.ModulesDir, s.Modules); err != nil {
			return nil, err
		}
	}
	cw := NewWriter(w, s.Mtime)
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "mnt"} {
		if err := cw.Dir(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := cw.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return nil, err
	}
	if err := copyFile(cw, "init", s.Init, 0o755); err != nil {
		return nil, err
	}
	if len(mods) > 0 {
		prefix := path.Join("lib/modules", filepath.Base(filepath.Clean(s.ModulesDir)))
		for _, m := range mods {
			if err := copyFile(cw, path.Join(prefix, filepath.ToSlash(m.Path)), filepath.Join(s.ModulesDir, m.Path), 0o644); err != nil {
				return nil, err
			}
		}
		list := ModuleList(prefix, mods)
		if err := cw.File(ModuleListName, 0o644, bytes.NewReader(list), int64(len(list))); err != nil {
			return nil, err
		}
	}
	names := make([]string, 0, len(s.Files))
	for n := range s.Files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := copyFile(cw, n, s.Files[n], 0o644); err != nil {
			return nil, err
		}
	}
	return mods, cw.Close()
}

func copyFile(cw *Writer, name, src string, perm os.FileMode) error {
	f, err := safefile.Open(src, os.O_RDONLY, 0)
	if err != nil {
		return fmt.Errorf("initramfs: %s: %w", name, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Mode().Perm()&0o111 != 0 {
		perm = 0o755
	}
	return cw.File(name, perm, f, st.Size())
}
