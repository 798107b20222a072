package repo

import (
	"archive/tar"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/updog/updog/internal/atomicfile"
	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/internal/flock"
	"github.com/updog/updog/internal/tufclient"
)

// ManifestTarget is the target an export always carries when the
// repository has it (updog reads it first).
const ManifestTarget = "manifest.json"

// ErrMirrorLayout means a repository without consistent snapshots was
// asked to be mirrored: its files cannot be replaced atomically per
// version.
var ErrMirrorLayout = errors.New("repo: a mirror needs consistent snapshots")

// ClientOptions are the client side of Export and Mirror.
type ClientOptions struct {
	// Now is the reference time for expiry (default time.Now).
	Now      func() time.Time
	Fetcher  *fetch.Fetcher
	Logger   *slog.Logger
	Progress Progress
}

func (o ClientOptions) client(root []byte, metaURL, targetsURL, cache string) (*tufclient.Client, error) {
	return tufclient.New(tufclient.Options{MetadataURL: metaURL, TargetsURL: targetsURL, Root: root, CacheDir: cache,
		Now: o.Now, Fetcher: o.Fetcher, Logger: o.Logger, MaxDelegations: maxRoles})
}

// ExportResult says what an export or a mirror holds.
type ExportResult struct {
	Out      string             `json:"out"`
	Versions tufclient.Versions `json:"versions"`
	Metadata []string           `json:"metadata"`
	Targets  []Target           `json:"targets"`
	Copied   int                `json:"copied"`
}

// chosen looks up the named targets (every target when names is empty)
// and the manifest when the repository has it.
func chosen(ctx context.Context, c *tufclient.Client, names []string) ([]*metadata.TargetFiles, error) {
	var out []*metadata.TargetFiles
	if len(names) == 0 {
		fs, err := c.AllTargets(ctx)
		if err != nil {
			return nil, err
		}
		for _, f := range fs {
			out = append(out, f.Target)
		}
		return out, nil
	}
	if !slices.Contains(names, ManifestTarget) {
		if tf, err := c.TargetContext(ctx, ManifestTarget); err == nil {
			out = append(out, tf)
		} else if !errors.Is(err, tufclient.ErrNoTarget) {
			return nil, err
		}
	}
	for _, n := range names {
		tf, err := c.TargetContext(ctx, n)
		if err != nil {
			return nil, err
		}
		out = append(out, tf)
	}
	return out, nil
}

// Export writes a self-contained, verified copy of the repository at
// metaURL/targetsURL, as the trusted root rootRaw sees it, into out: a tar
// file when out ends in ".tar", else a directory (absent or empty). It
// holds the metadata (from rootRaw's version up, and the delegated roles
// the chosen targets need) and the chosen targets (names, or all), plus
// manifest.json when the repository has it, laid out as tufclient's
// OpenBundle reads them. Every target is checked against its signed
// length and hashes while it is copied; the tar file is written to a
// temporary file and renamed into place, the directory staged and renamed;
// on any failure nothing is left at out.
//
// Hosts must trust rootRaw's version or a later one: older roots are not
// carried.
func Export(ctx context.Context, rootRaw []byte, metaURL, targetsURL, out string, names []string, o ClientOptions) (*ExportResult, error) {
	c, err := o.client(rootRaw, metaURL, targetsURL, "")
	if err != nil {
		return nil, err
	}
	if err := c.Refresh(ctx); err != nil {
		return nil, err
	}
	tfs, err := chosen(ctx, c, names)
	if err != nil {
		return nil, err
	}
	res := &ExportResult{Out: out, Versions: c.Versions()}
	if strings.HasSuffix(out, ".tar") {
		err = exportTar(ctx, c, tfs, out, o.Progress, res)
	} else {
		err = exportDir(ctx, c, rootRaw, tfs, out, o, res)
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

func exportTar(ctx context.Context, c *tufclient.Client, tfs []*metadata.TargetFiles, out string, prog Progress, res *ExportResult) error {
	if fi, err := os.Lstat(out); err == nil && !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s exists and is not a regular file", ErrOutdir, out)
	}
	return atomicfile.Write(out, PublicFileMode, func(w io.Writer) error {
		tw := tar.NewWriter(w)
		dirs := map[string]bool{}
		dir := func(p string) error {
			var parts []string
			for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
				parts = append(parts, d)
			}
			slices.Reverse(parts)
			for _, d := range parts {
				if dirs[d] {
					continue
				}
				dirs[d] = true
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}); err != nil {
					return err
				}
			}
			return nil
		}
		file := func(name string, size int64) error {
			if err := dir(name); err != nil {
				return err
			}
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644, ModTime: time.Unix(0, 0), Format: tar.FormatPAX})
		}
		for _, f := range c.Metadata() {
			name := tufclient.BundleMetadataDir + "/" + f.Name
			if err := file(name, int64(len(f.Data))); err != nil {
				return err
			}
			if _, err := tw.Write(f.Data); err != nil {
				return err
			}
			res.Metadata = append(res.Metadata, f.Name)
		}
		if err := dir(tufclient.BundleTargetsDir + "/x"); err != nil {
			return err
		}
		for _, tf := range tfs {
			stored, err := c.TargetFile(tf)
			if err != nil {
				return err
			}
			if err := file(tufclient.BundleTargetsDir+"/"+stored, tf.Length); err != nil {
				return err
			}
			if err := copyTarget(ctx, c, tf, tw, prog); err != nil {
				return err
			}
			res.Targets = append(res.Targets, Target{Name: tf.Path, Length: tf.Length, SHA256: hex.EncodeToString(tf.Hashes["sha256"])})
			res.Copied++
		}
		return tw.Close()
	})
}

// copyTarget streams a target into w, verified: a target that is not
// exactly what was signed fails the copy.
func copyTarget(ctx context.Context, c *tufclient.Client, tf *metadata.TargetFiles, w io.Writer, prog Progress) error {
	s, err := c.OpenTarget(ctx, tf)
	if err != nil {
		return err
	}
	defer s.Close()
	prog = progressOr(prog)
	prog.Start(tf.Path, tf.Length)
	defer prog.Finish()
	if _, err := copyCtx(ctx, w, s, func(b []byte) { prog.Add(len(b)) }); err != nil {
		return fmt.Errorf("target %s: %w", tf.Path, err)
	}
	if _, err := s.Finish(); err != nil {
		return fmt.Errorf("target %s: %w", tf.Path, err)
	}
	return nil
}

func exportDir(ctx context.Context, c *tufclient.Client, rootRaw []byte, tfs []*metadata.TargetFiles, out string, o ClientOptions, res *ExportResult) error {
	s, err := stage(out)
	if err != nil {
		return err
	}
	err = func() error {
		for _, f := range c.Metadata() {
			if err := writeNew(ctx, filepath.Join(s.metaDir, f.Name), strings.NewReader(string(f.Data))); err != nil {
				return err
			}
			res.Metadata = append(res.Metadata, f.Name)
		}
		for _, tf := range tfs {
			stored, err := c.TargetFile(tf)
			if err != nil {
				return err
			}
			dst := filepath.Join(s.targetsDir, filepath.FromSlash(stored))
			if err := mkdirPublic(s.targetsDir, filepath.Dir(dst)); err != nil {
				return err
			}
			f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, PublicFileMode)
			if err != nil {
				return err
			}
			err = copyTarget(ctx, c, tf, f, o.Progress)
			if err == nil {
				err = f.Sync()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			res.Targets = append(res.Targets, Target{Name: tf.Path, Length: tf.Length, SHA256: hex.EncodeToString(tf.Hashes["sha256"])})
			res.Copied++
		}
		// The staged copy must stand on its own: read it back as a host
		// would (metadata; the targets were checked as they were copied).
		check, err := o.client(rootRaw, s.metaDir, s.targetsDir, "")
		if err != nil {
			return err
		}
		if err := check.Refresh(ctx); err != nil {
			return fmt.Errorf("the exported copy does not verify: %w", err)
		}
		for _, tf := range tfs {
			if _, err := check.TargetContext(ctx, tf.Path); err != nil {
				return fmt.Errorf("the exported copy does not verify: %w", err)
			}
		}
		return s.commit(out)
	}()
	if err != nil {
		s.abort()
	}
	return err
}

// Mirror brings the directory dir (DIR/metadata, DIR/targets, as tough
// lays a repository out) up to date with the repository at
// metaURL/targetsURL, as the trusted root rootRaw sees it, verifying as it
// copies: every target reachable through the delegations is checked
// against its signed length and hashes while it is written (a temporary
// file renamed into place), targets already there are kept, then the
// metadata of the new version is added, and timestamp.json, which names
// it, is replaced last: the commit point. A client reading the mirror at
// any moment sees a whole version, the old or the new. Old versions are
// kept (clients mid-update may need them).
//
// The mirror keeps its own trusted metadata in dir/.tuf-mirror, so a
// source that rolls back, or freezes past its expiry, is refused on the
// next run. Two mirrors of the same directory at once are refused
// (dir/.mirror.lock). The repository must use consistent snapshots
// (ErrMirrorLayout).
func Mirror(ctx context.Context, rootRaw []byte, metaURL, targetsURL, dir string, o ClientOptions) (*ExportResult, error) {
	meta, targets := filepath.Join(dir, tufclient.BundleMetadataDir), filepath.Join(dir, tufclient.BundleTargetsDir)
	for _, d := range []string{dir, meta, targets} {
		if err := os.MkdirAll(d, PublicDirMode); err != nil {
			return nil, err
		}
	}
	held, err := flock.LockFile(ctx, filepath.Join(dir, ".mirror.lock"), 0)
	if err != nil {
		return nil, fmt.Errorf("mirroring into %s: %w", dir, err)
	}
	defer held.Release()
	c, err := o.client(rootRaw, metaURL, targetsURL, filepath.Join(dir, ".tuf-mirror"))
	if err != nil {
		return nil, err
	}
	if err := c.Refresh(ctx); err != nil {
		return nil, err
	}
	if !c.ConsistentSnapshot() {
		return nil, fmt.Errorf("%w: %s has consistent_snapshot off; use tuftool export instead", ErrMirrorLayout, metaURL)
	}
	fs, err := c.AllTargets(ctx)
	if err != nil {
		return nil, err
	}
	res := &ExportResult{Out: dir, Versions: c.Versions()}
	for _, f := range fs {
		tf := f.Target
		stored, err := c.TargetFile(tf)
		if err != nil {
			return nil, err
		}
		dst := filepath.Join(targets, filepath.FromSlash(stored))
		res.Targets = append(res.Targets, Target{Name: tf.Path, Length: tf.Length, SHA256: hex.EncodeToString(tf.Hashes["sha256"])})
		// Copies are atomic: a file at its hash-named place is whole.
		if fi, err := os.Lstat(dst); err == nil && fi.Mode().IsRegular() && fi.Size() == tf.Length {
			continue
		}
		if err := mkdirPublic(targets, filepath.Dir(dst)); err != nil {
			return nil, err
		}
		if err := c.SaveTarget(ctx, tf, dst, o.Progress); err != nil {
			return nil, fmt.Errorf("target %s: %w", tf.Path, err)
		}
		res.Copied++
	}
	var ts []byte
	for _, f := range c.Metadata() {
		res.Metadata = append(res.Metadata, f.Name)
		if f.Name == "timestamp.json" {
			ts = f.Data
			continue
		}
		p := filepath.Join(meta, f.Name)
		if old, err := os.ReadFile(p); err == nil && string(old) == string(f.Data) {
			continue
		}
		if err := atomicfile.WriteFile(p, f.Data, PublicFileMode); err != nil {
			return nil, err
		}
	}
	if ts == nil {
		return nil, errors.New("repo: the source served no timestamp")
	}
	// The commit point.
	if err := atomicfile.WriteFile(filepath.Join(meta, "timestamp.json"), ts, PublicFileMode); err != nil {
		return nil, err
	}
	return res, nil
}
