package tufclient

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/updog/updog/internal/safefile"
)

// An offline bundle (made by `tuftool export`) is a directory, or a tar
// file of one, holding a repository as tough lays it out:
//
//	metadata/   N.root.json ..., timestamp.json, N.snapshot.json, N.targets.json, delegated roles
//	targets/    the chosen targets, as <sha256>.<name> under consistent snapshots
const (
	BundleMetadataDir = "metadata"
	BundleTargetsDir  = "targets"
)

// Limits of a tar bundle unpacked by OpenBundle (defaults of
// BundleOptions).
const (
	// MaxBundleSize bounds the bytes unpacked from one bundle.
	MaxBundleSize = 64 << 30
	// MaxBundleEntries bounds the files and directories in one bundle.
	MaxBundleEntries = 100000
)

// ErrBundle means a bundle is malformed or hostile: an entry that is not
// a regular file or a directory (a symlink, a hard link, a device, a
// FIFO), a name that is absolute, climbs out or is outside metadata/ and
// targets/, a duplicate, or more data or entries than the limits.
var ErrBundle = errors.New("tufclient: bad bundle")

// BundleOptions configure OpenBundle. Zero values mean the defaults.
type BundleOptions struct {
	// TempDir is where a tar bundle is unpacked (default os.TempDir()).
	// The targets are unpacked too: choose a file system with room for
	// them (not a small tmpfs).
	TempDir string
	// MaxSize bounds the bytes unpacked (default MaxBundleSize).
	MaxSize int64
	// MaxEntries bounds the entries unpacked (default MaxBundleEntries).
	MaxEntries int
}

// Bundle is an offline bundle opened for a Client: use MetadataURL and
// TargetsURL as Options.MetadataURL and Options.TargetsURL, then Close.
type Bundle struct {
	// Dir holds metadata/ and targets/.
	Dir                     string
	MetadataURL, TargetsURL string
	tmp                     string
}

// Close removes what OpenBundle unpacked (nothing for a directory
// bundle).
func (b *Bundle) Close() error {
	if b.tmp == "" {
		return nil
	}
	err := os.RemoveAll(b.tmp)
	b.tmp = ""
	return err
}

// OpenBundle opens a bundle: a directory is used in place; a tar file is
// unpacked into a new private directory under o.TempDir, refusing every
// entry that is not a regular file or a directory under metadata/ or
// targets/ (ErrBundle) and stopping at o.MaxSize bytes or o.MaxEntries
// entries. Nothing in a bundle is trusted by being there: the Client
// verifies it as it would verify a repository on the network.
func OpenBundle(ctx context.Context, p string, o BundleOptions) (*Bundle, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("opening the bundle: %w", err)
	}
	if fi.IsDir() {
		return bundleDir(p, "")
	}
	f, err := safefile.Open(p, os.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBundle, err)
	}
	defer f.Close()
	if o.TempDir == "" {
		o.TempDir = os.TempDir()
	}
	if o.MaxSize <= 0 {
		o.MaxSize = MaxBundleSize
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = MaxBundleEntries
	}
	tmp, err := os.MkdirTemp(o.TempDir, "bundle-")
	if err != nil {
		return nil, err
	}
	if err := untar(ctx, bufio.NewReaderSize(f, 1<<20), tmp, o); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("unpacking %s: %w", p, err)
	}
	for _, d := range []string{BundleMetadataDir, BundleTargetsDir} {
		if err := os.MkdirAll(filepath.Join(tmp, d), 0o700); err != nil {
			os.RemoveAll(tmp)
			return nil, err
		}
	}
	b, err := bundleDir(tmp, tmp)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	return b, nil
}

func bundleDir(dir, tmp string) (*Bundle, error) {
	meta := filepath.Join(dir, BundleMetadataDir)
	if fi, err := os.Stat(meta); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%w: %s has no %s directory", ErrBundle, dir, BundleMetadataDir)
	}
	return &Bundle{Dir: dir, MetadataURL: meta, TargetsURL: filepath.Join(dir, BundleTargetsDir), tmp: tmp}, nil
}

// bundleName checks a tar entry's name and returns it cleaned.
func bundleName(name string) (string, error) {
	clean := path.Clean(strings.TrimPrefix(name, "./"))
	switch {
	case name == "", strings.ContainsAny(name, "\x00\\"), strings.HasPrefix(name, "/"):
		return "", fmt.Errorf("%w: entry %q: an absolute or unusable name", ErrBundle, name)
	case !filepath.IsLocal(clean):
		return "", fmt.Errorf("%w: entry %q would be written outside the bundle", ErrBundle, name)
	case clean == ".":
		return clean, nil
	}
	top, _, _ := strings.Cut(clean, "/")
	if top != BundleMetadataDir && top != BundleTargetsDir {
		return "", fmt.Errorf("%w: entry %q is outside %s/ and %s/", ErrBundle, name, BundleMetadataDir, BundleTargetsDir)
	}
	return clean, nil
}

// untar unpacks regular files and directories into dir, which is new and
// private: since no symlink is ever created there, no name can lead out.
func untar(ctx context.Context, r io.Reader, dir string, o BundleOptions) error {
	tr := tar.NewReader(r)
	var total int64
	entries := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %w", ErrBundle, err)
		}
		if h.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		if entries++; entries > o.MaxEntries {
			return fmt.Errorf("%w: more than %d entries", ErrBundle, o.MaxEntries)
		}
		name, err := bundleName(h.Name)
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o700); err != nil {
				return err
			}
			continue
		case tar.TypeReg:
		default:
			return fmt.Errorf("%w: entry %q is %s, not a regular file or a directory", ErrBundle, h.Name, entryKind(h.Typeflag))
		}
		if name == "." || !strings.Contains(name, "/") {
			return fmt.Errorf("%w: entry %q: a file where a directory belongs", ErrBundle, h.Name)
		}
		if h.Size < 0 || h.Size > o.MaxSize-total {
			return fmt.Errorf("%w: entry %q (%d bytes) goes past the %d bytes a bundle may hold", ErrBundle, h.Name, h.Size, o.MaxSize)
		}
		if strings.HasPrefix(name, BundleMetadataDir+"/") && h.Size > safefile.MaxMetadata {
			return fmt.Errorf("%w: metadata entry %q is %d bytes, more than %d", ErrBundle, h.Name, h.Size, safefile.MaxMetadata)
		}
		total += h.Size
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return err
		}
		f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%w: entry %q appears twice", ErrBundle, h.Name)
		}
		if err != nil {
			return err
		}
		n, err := io.Copy(f, ctxReader{ctx, io.LimitReader(tr, h.Size)})
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("unpacking %q: %w", h.Name, err)
		}
		if n != h.Size {
			return fmt.Errorf("%w: entry %q is cut short (%d of %d bytes)", ErrBundle, h.Name, n, h.Size)
		}
	}
}

func entryKind(t byte) string {
	switch t {
	case tar.TypeSymlink:
		return "a symlink"
	case tar.TypeLink:
		return "a hard link"
	case tar.TypeChar, tar.TypeBlock:
		return "a device"
	case tar.TypeFifo:
		return "a FIFO"
	}
	return fmt.Sprintf("of type %q", t)
}
