package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// A root file system given as a tarball is extracted into a staging
// directory that the mkfs tools then read. The tarball is the release
// engineer's input, but it may come from anywhere (a container export, a
// download), so extraction trusts none of it:
//
//   - names that are absolute or have a ".." component are refused;
//   - every file is created through an os.Root on the staging directory:
//     nothing is ever written through a symbolic link that leads out of
//     it (an absolute link, or one that climbs out with ".."), and a name
//     whose parent is such a link is refused;
//   - symbolic links themselves are copied as they are: an absolute target
//     such as /usr/bin/env is normal in a root file system and resolves
//     inside the image when it boots;
//   - a hard link must name an earlier regular file of the tarball by a
//     safe name;
//   - device nodes need root to create, and so do files owned by anyone
//     but root: without root, such a tarball is refused, and one whose
//     files are all root's is extracted as the builder and made root's in
//     the image;
//   - the bytes extracted are bounded by the root partition's size, so a
//     tarball cannot fill the build machine's disk.

// ErrUnsafeTar means a rootfs tarball entry was refused (see TarError).
var ErrUnsafeTar = errors.New("image: unsafe rootfs tarball")

// ErrNeedRoot means the input needs root privileges to build from.
var ErrNeedRoot = errors.New("image: needs root privileges")

// TarError names a refused tarball entry and why.
type TarError struct {
	Name   string
	Reason string
	Err    error // ErrUnsafeTar, ErrNeedRoot or another cause
}

func (e *TarError) Error() string {
	return fmt.Sprintf("rootfs tarball entry %q: %s", e.Name, e.Reason)
}

func (e *TarError) Unwrap() error { return e.Err }

// TarStats describe an extraction.
type TarStats struct {
	Entries int
	Bytes   int64
	// AllRoot says the files must be made root's in the image: they are
	// all root's in the tarball but were extracted without root.
	AllRoot bool
	// XattrsSkipped counts entries whose extended attributes were not
	// carried over.
	XattrsSkipped int
}

// TarOptions control ExtractTar.
type TarOptions struct {
	// AsRoot: create device nodes and give files their owners.
	AsRoot bool
	// MaxBytes bounds the bytes of file data extracted (0: no bound).
	MaxBytes int64
}

// openTarball opens a tarball file, uncompressed or compressed with gzip,
// zstd or xz (recognised by their magic bytes). A FIFO or anything else
// that is not a regular file is refused without blocking.
func openTarball(p string, open func(string) (*os.File, error)) (io.Reader, func(), error) {
	f, err := open(p)
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReaderSize(f, 1<<20)
	head, _ := br.Peek(6)
	closeAll := func() { f.Close() }
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("%s: gzip: %w", p, err)
		}
		return zr, closeAll, nil
	case bytes.HasPrefix(head, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderMaxWindow(128<<20))
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("%s: zstd: %w", p, err)
		}
		return zr, func() { zr.Close(); f.Close() }, nil
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		xr, err := xz.NewReader(br)
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("%s: xz: %w", p, err)
		}
		return xr, closeAll, nil
	}
	return br, closeAll, nil
}

// safeName checks and cleans a name from the tarball: relative, no ".."
// component. It returns "" for the top directory itself.
func safeName(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", errors.New("has a NUL byte")
	}
	if path.IsAbs(name) {
		return "", errors.New("is an absolute path")
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", errors.New(`has a ".." component`)
		}
	}
	c := path.Clean(name)
	if c == "." {
		return "", nil
	}
	return c, nil
}

type dirMode struct {
	name string
	mode fs.FileMode
}

// ExtractTar extracts the tarball read from r into dir (which must exist
// and be empty), under the rules above. On error, dir holds a part of the
// tarball; the caller removes it.
func ExtractTar(ctx context.Context, r io.Reader, dir string, o TarOptions) (TarStats, error) {
	var st TarStats
	root, err := os.OpenRoot(dir)
	if err != nil {
		return st, err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	var dirs []dirMode
	buf := make([]byte, 1<<20)
	for {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return st, fmt.Errorf("rootfs tarball: %w", err)
		}
		st.Entries++
		refuse := func(sentinel error, format string, a ...any) error {
			return &TarError{Name: h.Name, Reason: fmt.Sprintf(format, a...), Err: sentinel}
		}
		name, err := safeName(h.Name)
		if err != nil {
			return st, refuse(ErrUnsafeTar, "%v", err)
		}
		for k := range h.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				st.XattrsSkipped++
				break
			}
		}
		if !o.AsRoot && (h.Uid != 0 || h.Gid != 0) {
			return st, refuse(ErrNeedRoot, "is owned by %d:%d: extracting files for users other than root needs root", h.Uid, h.Gid)
		}
		if name == "" {
			continue // the top directory: the image's root is made by mkfs
		}
		if dir := path.Dir(name); dir != "." {
			if err := root.MkdirAll(dir, 0o755); err != nil {
				return st, refuse(ErrUnsafeTar, "cannot create its directory: %v", err)
			}
		}
		mode := h.FileInfo().Mode()
		switch h.Typeflag {
		case tar.TypeDir:
			if fi, err := root.Lstat(name); err == nil && !fi.IsDir() {
				if err := root.Remove(name); err != nil {
					return st, refuse(ErrUnsafeTar, "cannot replace the earlier entry: %v", err)
				}
			}
			if err := root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
				return st, refuse(ErrUnsafeTar, "%v", err)
			}
			dirs = append(dirs, dirMode{name, mode})
		case tar.TypeReg: // the reader reports the old TypeRegA as TypeReg
			if o.MaxBytes > 0 && st.Bytes+h.Size > o.MaxBytes {
				return st, &TooBigError{What: "the root file system's files", Need: st.Bytes + h.Size, Have: o.MaxBytes, Where: "the ROOT partition"}
			}
			if err := removeOld(root, name); err != nil {
				return st, refuse(ErrUnsafeTar, "%v", err)
			}
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return st, refuse(ErrUnsafeTar, "%v", err)
			}
			n, err := copyCtx(ctx, f, tr, buf)
			st.Bytes += n
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return st, fmt.Errorf("rootfs tarball entry %q: %w", h.Name, err)
			}
		case tar.TypeSymlink:
			if h.Linkname == "" || strings.IndexByte(h.Linkname, 0) >= 0 {
				return st, refuse(ErrUnsafeTar, "a symbolic link with an empty or NUL-bearing target")
			}
			if err := removeOld(root, name); err != nil {
				return st, refuse(ErrUnsafeTar, "%v", err)
			}
			if err := root.Symlink(h.Linkname, name); err != nil {
				return st, refuse(ErrUnsafeTar, "%v", err)
			}
		case tar.TypeLink:
			target, err := safeName(h.Linkname)
			if err != nil || target == "" {
				if err == nil {
					err = errors.New("names the top directory")
				}
				return st, refuse(ErrUnsafeTar, "a hard link whose target %q %v", h.Linkname, err)
			}
			fi, err := root.Lstat(target)
			if err != nil || !fi.Mode().IsRegular() {
				return st, refuse(ErrUnsafeTar, "a hard link to %q, which is not an earlier regular file of the tarball", h.Linkname)
			}
			if err := removeOld(root, name); err != nil {
				return st, refuse(ErrUnsafeTar, "%v", err)
			}
			if err := root.Link(target, name); err != nil {
				return st, refuse(ErrUnsafeTar, "%v", err)
			}
			continue // a hard link shares its target's owner and mode
		case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			if h.Typeflag != tar.TypeFifo && !o.AsRoot {
				return st, refuse(ErrNeedRoot, "is a device node: creating device nodes needs root (run imgbuild as root, or build from a directory, which mke2fs copies device nodes from without root)")
			}
			if err := removeOld(root, name); err != nil {
				return st, refuse(ErrUnsafeTar, "%v", err)
			}
			if err := mknodIn(root, name, h); err != nil {
				return st, refuse(ErrUnsafeTar, "%v", err)
			}
		default:
			return st, refuse(ErrUnsafeTar, "has type %q, which a root file system cannot hold", h.Typeflag)
		}
		if o.AsRoot {
			if err := root.Lchown(name, h.Uid, h.Gid); err != nil {
				return st, fmt.Errorf("rootfs tarball entry %q: %w", h.Name, err)
			}
		}
		if h.Typeflag != tar.TypeSymlink && h.Typeflag != tar.TypeDir {
			if err := root.Chmod(name, mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
				return st, fmt.Errorf("rootfs tarball entry %q: %w", h.Name, err)
			}
		}
	}
	// Directory modes last, deepest first, so a read-only directory does
	// not stop what goes inside it.
	sort.SliceStable(dirs, func(i, j int) bool { return strings.Count(dirs[i].name, "/") > strings.Count(dirs[j].name, "/") })
	for _, d := range dirs {
		if fi, err := root.Lstat(d.name); err != nil || !fi.IsDir() {
			continue // replaced by a later entry
		}
		if err := root.Chmod(d.name, d.mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
			return st, fmt.Errorf("rootfs tarball entry %q: %w", d.name, err)
		}
	}
	st.AllRoot = !o.AsRoot
	return st, nil
}

// removeOld removes what an earlier entry put at name, unless it is a
// directory (tar replaces files, and never a directory by a file).
func removeOld(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.IsDir():
		return errors.New("replaces a directory")
	}
	return root.Remove(name)
}

// mknodIn makes a device node or FIFO inside root, through a descriptor
// of its parent directory opened through root.
func mknodIn(root *os.Root, name string, h *tar.Header) error {
	parent, err := root.Open(path.Dir(name))
	if err != nil {
		return err
	}
	defer parent.Close()
	mode := uint32(h.Mode & 0o7777)
	switch h.Typeflag {
	case tar.TypeChar:
		mode |= modeChar
	case tar.TypeBlock:
		mode |= modeBlock
	default:
		mode |= modeFIFO
	}
	return mknodat(parent, path.Base(name), mode, uint32(h.Devmajor), uint32(h.Devminor))
}

// copyCtx copies src to dst, stopping when ctx ends.
func copyCtx(ctx context.Context, dst io.Writer, src io.Reader, buf []byte) (int64, error) {
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		k, err := src.Read(buf)
		if k > 0 {
			w, werr := dst.Write(buf[:k])
			n += int64(w)
			if werr != nil {
				return n, werr
			}
		}
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
