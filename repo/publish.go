package repo

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"

	"github.com/updog/updog/internal/atomicfile"
	"github.com/updog/updog/internal/fetch"
	"github.com/updog/updog/internal/safefile"
	"github.com/updog/updog/internal/tufclient"
	"github.com/updog/updog/signing"
)

// Modes of a published repository: public metadata and targets are
// readable by everyone, so a web server running as another user can serve
// them, whatever the umask (they are set explicitly).
const (
	PublicDirMode  os.FileMode = 0o755
	PublicFileMode os.FileMode = 0o644
)

// Default lifetimes of new metadata: Bottlerocket's repo-expiration policy
// 2w-2w-1w (targets and snapshot two weeks, timestamp one week).
const (
	DefaultTargetsLifetime   = 14 * 24 * time.Hour
	DefaultSnapshotLifetime  = 14 * 24 * time.Hour
	DefaultTimestampLifetime = 7 * 24 * time.Hour
)

// More sentinel errors.
var (
	// ErrTargetName means a target name could escape the targets
	// directory or is otherwise unusable.
	ErrTargetName = errors.New("repo: bad target name")
	// ErrOutdir means the output directory already holds something.
	ErrOutdir = errors.New("repo: output directory is not empty")
	// ErrTargetsDir means the directory of targets to add is not a
	// directory.
	ErrTargetsDir = errors.New("repo: not a directory of targets")
)

// Options control Create and Update. Zero values mean defaults.
type Options struct {
	// Signers are the keys at hand; each role is signed by those listed
	// for it in the root.
	Signers []signing.Signer
	// Versions of the new metadata (default: 1 for a new repository, the
	// previous version + 1 on update).
	TargetsVersion, SnapshotVersion, TimestampVersion int64
	// Expiry of the new metadata (default: now + the Default*Lifetime).
	TargetsExpires, SnapshotExpires, TimestampExpires time.Time
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *slog.Logger
	// Fetcher reads remote metadata for Update (default fetch.New()).
	Fetcher *fetch.Fetcher
	// Progress, when set, is told about targets as they are copied.
	Progress Progress
	// Incoming are signed roles to publish (from the delegation
	// commands): Update only.
	Incoming []*Incoming
}

// Progress receives byte counts while targets are copied or downloaded (a
// terminal progress line, in the commands).
type Progress interface {
	Start(name string, total int64)
	Add(n int)
	Finish()
}

type noProgress struct{}

func (noProgress) Start(string, int64) {}
func (noProgress) Add(int)             {}
func (noProgress) Finish()             {}

func progressOr(p Progress) Progress {
	if p == nil {
		return noProgress{}
	}
	return p
}

func (o *Options) now() time.Time {
	if o.Now != nil {
		return o.Now()
	}
	return time.Now()
}

func (o *Options) log() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (o *Options) fetcher() *fetch.Fetcher {
	if o.Fetcher != nil {
		return o.Fetcher
	}
	return fetch.New()
}

// Target describes one published target.
type Target struct {
	Name   string `json:"name"`
	Length int64  `json:"length"`
	SHA256 string `json:"sha256"`
}

// Result says what was published.
type Result struct {
	Dir              string   `json:"dir"`
	RootVersion      int64    `json:"root_version"`
	TargetsVersion   int64    `json:"targets_version"`
	SnapshotVersion  int64    `json:"snapshot_version"`
	TimestampVersion int64    `json:"timestamp_version"`
	Added            []Target `json:"added"`
	Targets          int      `json:"targets"`
}

// CheckTargetName refuses names that could escape a directory or confuse a
// client: empty, absolute, with a path separator or a "." or ".." part.
func CheckTargetName(name string) error {
	switch {
	case name == "", name == ".", name == "..":
		return fmt.Errorf("%w: %q", ErrTargetName, name)
	case strings.ContainsAny(name, "/\\\x00"):
		return fmt.Errorf("%w: %q contains a path separator", ErrTargetName, name)
	}
	return nil
}

// staged is a repository being built in a temporary directory.
type staged struct {
	tmp        string
	metaDir    string
	targetsDir string
}

// stage makes the temporary directory beside outdir, after checking that
// outdir is absent or empty.
func stage(outdir string) (*staged, error) {
	if ents, err := os.ReadDir(outdir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrOutdir, outdir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	parent := filepath.Dir(filepath.Clean(outdir))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(outdir)+".tmp-")
	if err != nil {
		return nil, err
	}
	s := &staged{tmp: tmp, metaDir: filepath.Join(tmp, "metadata"), targetsDir: filepath.Join(tmp, "targets")}
	// MkdirTemp makes 0700 and Mkdir obeys the umask: set the modes.
	if err := os.Chmod(tmp, PublicDirMode); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	for _, d := range []string{s.metaDir, s.targetsDir} {
		if err := os.Mkdir(d, PublicDirMode); err != nil {
			os.RemoveAll(tmp)
			return nil, err
		}
		if err := os.Chmod(d, PublicDirMode); err != nil {
			os.RemoveAll(tmp)
			return nil, err
		}
	}
	return s, nil
}

// commit syncs the staged tree and renames it to outdir: the commit point.
// Before it, outdir is untouched; after it, outdir is the whole repository.
func (s *staged) commit(outdir string) error {
	for _, d := range []string{s.metaDir, s.targetsDir, s.tmp} {
		if err := atomicfile.SyncDir(d); err != nil {
			return err
		}
	}
	os.Remove(outdir) // an empty directory; Rename needs it gone
	if err := os.Rename(s.tmp, outdir); err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(filepath.Clean(outdir)))
}

func (s *staged) abort() { os.RemoveAll(s.tmp) }

// writeNew creates path (which must not exist), mode PublicFileMode, with
// what r holds, synced. It stops when ctx is done.
func writeNew(ctx context.Context, path string, r io.Reader) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, PublicFileMode)
	if err != nil {
		return err
	}
	err = f.Chmod(PublicFileMode)
	if err == nil {
		_, err = copyCtx(ctx, f, r, nil)
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// copyBufSize is the buffer used to copy and hash targets in one pass.
const copyBufSize = 1 << 20

// copyCtx copies r to w (and to each of also), checking ctx between
// buffers.
func copyCtx(ctx context.Context, w io.Writer, r io.Reader, each func([]byte)) (int64, error) {
	buf := make([]byte, copyBufSize)
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		k, rerr := r.Read(buf)
		if k > 0 {
			if each != nil {
				each(buf[:k])
			}
			if _, err := w.Write(buf[:k]); err != nil {
				return n, err
			}
			n += int64(k)
		}
		if errors.Is(rerr, io.EOF) {
			return n, nil
		}
		if rerr != nil {
			return n, &readError{rerr}
		}
	}
}

// readError marks a failure of the source in copyCtx.
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// addTarget copies src into the staged targets directory, hashing it on
// the way, and names the copy <sha256>.<name>.
func (s *staged) addTarget(ctx context.Context, name, src string, prog Progress) (*metadata.TargetFiles, string, error) {
	return s.addTargetAt(ctx, name, src, prog)
}

// addTargetAt is addTarget for names that may hold directories
// ("team/image"): the copy is <dir>/<sha256>.<base>.
func (s *staged) addTargetAt(ctx context.Context, name, src string, prog Progress) (*metadata.TargetFiles, string, error) {
	// Never blocks on a FIFO swapped in after the listing; refuses devices.
	in, err := safefile.Open(src, os.O_RDONLY, 0)
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrTargetName, err)
	}
	defer in.Close()
	prog = progressOr(prog)
	if fi, err := in.Stat(); err == nil {
		prog.Start(name, fi.Size())
	}
	defer prog.Finish()
	tmp, err := os.CreateTemp(s.targetsDir, ".incoming-")
	if err != nil {
		return nil, "", err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	if err := tmp.Chmod(PublicFileMode); err != nil {
		tmp.Close()
		return nil, "", err
	}
	h := sha256.New()
	n, err := copyCtx(ctx, tmp, in, func(b []byte) {
		h.Write(b)
		prog.Add(len(b))
	})
	if err != nil {
		tmp.Close()
		var re *readError
		if errors.As(err, &re) {
			return nil, "", fmt.Errorf("reading target %s: %w", src, re.err)
		}
		if ctx.Err() != nil {
			return nil, "", err
		}
		return nil, "", fmt.Errorf("writing target %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, "", err
	}
	if err := tmp.Close(); err != nil {
		return nil, "", err
	}
	sum := h.Sum(nil)
	tf := &metadata.TargetFiles{Length: n, Hashes: metadata.Hashes{"sha256": sum}}
	stored, err := storedName(name, tf)
	if err != nil {
		return nil, "", err
	}
	dst := filepath.Join(s.targetsDir, filepath.FromSlash(stored))
	if err := mkdirPublic(s.targetsDir, filepath.Dir(dst)); err != nil {
		return nil, "", err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return nil, "", err
	}
	return tf, hex.EncodeToString(sum), nil
}

// mkdirPublic makes dir (under base) and its parents, mode PublicDirMode
// whatever the umask.
func mkdirPublic(base, dir string) error {
	rel, err := filepath.Rel(base, dir)
	if err != nil || rel == "." {
		return err
	}
	cur := base
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		cur = filepath.Join(cur, part)
		if err := os.Mkdir(cur, PublicDirMode); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		if err := os.Chmod(cur, PublicDirMode); err != nil {
			return err
		}
	}
	return nil
}

// linkTarget puts an existing stored target into the staged repository, by
// hard link when it is a regular file already readable by all (a link
// shares the mode, and the source is not ours to change), else by copy.
func (s *staged) linkTarget(ctx context.Context, src, stored string) error {
	dst := filepath.Join(s.targetsDir, filepath.FromSlash(stored))
	if err := mkdirPublic(s.targetsDir, filepath.Dir(dst)); err != nil {
		return err
	}
	if fi, err := os.Lstat(src); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm() == PublicFileMode {
		if err := os.Link(src, dst); err == nil {
			return nil
		}
	}
	in, err := safefile.Open(src, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeNew(ctx, dst, in)
}

// listTargets returns the regular files of dir by name, refusing names a
// target cannot have.
func listTargets(dir string) ([]string, error) {
	// os.ReadDir opens dir, which would block on a FIFO: look first.
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%w: %w", ErrTargetsDir, &safefile.KindError{Path: dir, Mode: fi.Mode(), Want: "a directory"})
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if !e.Type().IsRegular() {
			if e.IsDir() {
				return nil, fmt.Errorf("%w: %s is a directory (targets are the regular files of %s)", ErrTargetName, e.Name(), dir)
			}
			return nil, fmt.Errorf("%w: %w", ErrTargetName, &safefile.KindError{Path: filepath.Join(dir, e.Name()), Mode: e.Type(), Want: "a regular file"})
		}
		if err := CheckTargetName(e.Name()); err != nil {
			return nil, err
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, nil
}

// signRole signs md with every signer listed for role and checks that the
// role's threshold is met.
func signRole[T metadata.Roles](ctx context.Context, root *Root, role string, md *metadata.Metadata[T], signers []signing.Signer) error {
	rl := root.Signed.Roles[role]
	md.Signatures = []metadata.Signature{}
	used := 0
	for _, s := range signers {
		id, err := s.Key().ID()
		if err != nil {
			return err
		}
		if !slices.Contains(rl.KeyIDs, id) {
			continue
		}
		if err := signing.SignMetadata(ctx, md, s); err != nil {
			return fmt.Errorf("signing %s with key %s: %w", role, id, err)
		}
		used++
	}
	if err := root.VerifyDelegate(role, md); err != nil {
		return fmt.Errorf("%w: %s needs %d signature(s) from its %d key(s); %d of the keys given are %s keys: %w",
			ErrThreshold, role, rl.Threshold, len(rl.KeyIDs), used, role, err)
	}
	return nil
}

// plan is the metadata of a repository about to be written.
type plan struct {
	roots     map[int64][]byte // every root version to publish
	root      *Root            // the newest
	targets   *metadata.Metadata[metadata.TargetsType]
	snapshot  *metadata.Metadata[metadata.SnapshotType]
	timestamp *metadata.Metadata[metadata.TimestampType]
	// raw bytes to publish as they are (timestamp-only updates keep the
	// signed targets and snapshot byte for byte)
	targetsRaw, snapshotRaw []byte
	// delegated are the delegated roles at hand, signed (carried over
	// byte for byte, or incoming); only those reachable from targets are
	// published and listed in the snapshot.
	delegated map[string]*delegatedRole
	// published is the reachable subset, in the order reached.
	published []string
}

// metaName is a role's metadata file name in the repository.
func (p *plan) metaName(role string, version int64) string {
	name := tufclient.EscapeRole(role) + ".json"
	if p.root.Signed.ConsistentSnapshot || role == metadata.ROOT {
		return strconv.FormatInt(version, 10) + "." + name
	}
	return name
}

// reachable walks the delegations from targets (breadth first) and checks
// each role reached: published, well formed, signed by the threshold of the
// delegation that reaches it, not expired at now.
func (p *plan) reachable(now time.Time) ([]string, error) {
	seen := map[string]bool{}
	var order []string
	type edge struct {
		from   string
		parent *metadata.Metadata[metadata.TargetsType]
	}
	queue := []edge{{metadata.TARGETS, p.targets}}
	for len(queue) > 0 {
		e := queue[0]
		queue = queue[1:]
		if err := checkDelegationForm(e.from, e.parent.Signed.Delegations); err != nil {
			return nil, err
		}
		succinct := e.parent.Signed.Delegations != nil && e.parent.Signed.Delegations.SuccinctRoles != nil
		for _, n := range delegatedNames(e.parent) {
			if seen[n] {
				continue
			}
			d, ok := p.delegated[n]
			if !ok {
				if succinct {
					continue
				}
				return nil, fmt.Errorf("%w: %s delegates to %s, which is not published (add it with tuftool delegation ... and update --incoming-metadata)", ErrDelegation, e.from, n)
			}
			if err := verifyDelegation(e.parent, n, d.md); err != nil {
				return nil, fmt.Errorf("%w: role %s is not signed by the keys %s delegates it to: %w", ErrThreshold, n, e.from, err)
			}
			if !d.md.Signed.Expires.After(now) {
				return nil, fmt.Errorf("%w: delegated role %s version %d expired at %s; sign a new version with tuftool delegation --signing-role %s update-delegated-targets",
					ErrExpired, n, d.md.Signed.Version, d.md.Signed.Expires.Format(time.RFC3339), n)
			}
			if len(seen) >= maxRoles {
				return nil, fmt.Errorf("%w: more than %d delegated roles", ErrDelegation, maxRoles)
			}
			seen[n] = true
			order = append(order, n)
			queue = append(queue, edge{n, d.md})
		}
	}
	return order, nil
}

// checkDelegationForm refuses delegations a client would refuse.
func checkDelegationForm(from string, d *metadata.Delegations) error {
	if d == nil || d.Roles == nil {
		return nil
	}
	if d.SuccinctRoles != nil {
		return fmt.Errorf("%w: %s has both roles and succinct_roles", ErrDelegation, from)
	}
	seen := map[string]bool{}
	for _, r := range d.Roles {
		switch {
		case r.Name == "" || slices.Contains(TopLevelRoles, r.Name):
			return fmt.Errorf("%w: %s delegates to %q, which cannot be a delegated role's name", ErrDelegation, from, r.Name)
		case seen[r.Name]:
			return fmt.Errorf("%w: %s delegates to %s twice", ErrDelegation, from, r.Name)
		case (r.Paths != nil) == (r.PathHashPrefixes != nil):
			return fmt.Errorf("%w: %s's delegation to %s needs exactly one of paths and path_hash_prefixes", ErrDelegation, from, r.Name)
		case r.Threshold < 1 || len(r.KeyIDs) < r.Threshold:
			return fmt.Errorf("%w: %s's delegation to %s has threshold %d and %d key(s)", ErrDelegation, from, r.Name, r.Threshold, len(r.KeyIDs))
		}
		for _, id := range r.KeyIDs {
			if _, ok := d.Keys[id]; !ok {
				return fmt.Errorf("%w: %s's delegation to %s names key %s, which it does not define", ErrDelegation, from, r.Name, id)
			}
		}
		seen[r.Name] = true
	}
	return nil
}

func expiry(t time.Time, now time.Time, d time.Duration) time.Time {
	if t.IsZero() {
		t = now.Add(d)
	}
	return wholeSeconds(t)
}

// finish signs what needs signing, writes the metadata into the staged
// directory, verifies the result as a client would, and commits it.
func (p *plan) finish(ctx context.Context, s *staged, outdir string, o *Options) error {
	now := o.now()
	if p.targetsRaw == nil {
		if err := signRole(ctx, p.root, metadata.TARGETS, p.targets, o.Signers); err != nil {
			return err
		}
		b, err := p.targets.ToBytes(true)
		if err != nil {
			return err
		}
		p.targetsRaw = b
	}
	var err error
	if p.published, err = p.reachable(now); err != nil {
		return err
	}
	if p.snapshotRaw == nil {
		p.snapshot.Signed.Meta = map[string]*metadata.MetaFiles{
			"targets.json": {Version: p.targets.Signed.Version},
		}
		for _, n := range p.published {
			p.snapshot.Signed.Meta[n+".json"] = &metadata.MetaFiles{Version: p.delegated[n].md.Signed.Version}
		}
		if err := signRole(ctx, p.root, metadata.SNAPSHOT, p.snapshot, o.Signers); err != nil {
			return err
		}
		b, err := p.snapshot.ToBytes(true)
		if err != nil {
			return err
		}
		p.snapshotRaw = b
	}
	sum := sha256.Sum256(p.snapshotRaw)
	p.timestamp.Signed.Meta = map[string]*metadata.MetaFiles{"snapshot.json": {
		Version: p.snapshot.Signed.Version, Length: int64(len(p.snapshotRaw)), Hashes: metadata.Hashes{"sha256": sum[:]}}}
	if err := signRole(ctx, p.root, metadata.TIMESTAMP, p.timestamp, o.Signers); err != nil {
		return err
	}
	tsRaw, err := p.timestamp.ToBytes(true)
	if err != nil {
		return err
	}
	for _, c := range []struct {
		role    string
		expires time.Time
	}{{"targets", p.targets.Signed.Expires}, {"snapshot", p.snapshot.Signed.Expires}, {"timestamp", p.timestamp.Signed.Expires}} {
		if !c.expires.After(now) {
			return fmt.Errorf("%w: %s would expire at %s, which is not in the future", ErrExpired, c.role, c.expires.Format(time.RFC3339))
		}
	}
	files := map[string][]byte{
		p.metaName(metadata.TARGETS, p.targets.Signed.Version):   p.targetsRaw,
		p.metaName(metadata.SNAPSHOT, p.snapshot.Signed.Version): p.snapshotRaw,
		"timestamp.json": tsRaw,
	}
	for _, n := range p.published {
		files[p.metaName(n, p.delegated[n].md.Signed.Version)] = p.delegated[n].raw
	}
	for v, b := range p.roots {
		files[strconv.FormatInt(v, 10)+".root.json"] = b
	}
	if err := verifyAsClient(p, tsRaw, now); err != nil {
		return fmt.Errorf("refusing to publish metadata a client would reject: %w", err)
	}
	for name, b := range files {
		if err := writeNew(ctx, filepath.Join(s.metaDir, name), bytes.NewReader(b)); err != nil {
			return err
		}
	}
	if err := clientCheck(ctx, s, p, now); err != nil {
		return fmt.Errorf("refusing to publish metadata a client would reject: %w", err)
	}
	if err := s.commit(outdir); err != nil {
		return err
	}
	o.log().Info("published repository", "dir", outdir, "targets_version", p.targets.Signed.Version,
		"snapshot_version", p.snapshot.Signed.Version, "timestamp_version", p.timestamp.Signed.Version)
	return nil
}

// clientCheck reads the staged metadata with the client updog uses, from
// the oldest root published, and searches every target every reachable
// role lists.
func clientCheck(ctx context.Context, s *staged, p *plan, now time.Time) error {
	oldest := int64(math.MaxInt64)
	for v := range p.roots {
		oldest = min(oldest, v)
	}
	c, err := tufclient.New(tufclient.Options{MetadataURL: s.metaDir, TargetsURL: s.targetsDir, Root: p.roots[oldest],
		Now: func() time.Time { return now }, MaxDelegations: maxRoles})
	if err != nil {
		return err
	}
	if err := c.Refresh(ctx); err != nil {
		return err
	}
	_, err = c.AllTargets(ctx)
	return err
}

// verifyAsClient walks the metadata as a TUF client would, from the oldest
// root published: root chain, timestamp, snapshot, targets.
func verifyAsClient(p *plan, tsRaw []byte, now time.Time) error {
	versions := make([]int64, 0, len(p.roots))
	for v := range p.roots {
		versions = append(versions, v)
	}
	slices.Sort(versions)
	tm, err := trustedmetadata.New(p.roots[versions[0]])
	if err != nil {
		return err
	}
	tm.RefTime = now
	for _, v := range versions[1:] {
		if _, err := tm.UpdateRoot(p.roots[v]); err != nil {
			return fmt.Errorf("root version %d: %w", v, err)
		}
	}
	if _, err := tm.UpdateTimestamp(tsRaw); err != nil {
		return fmt.Errorf("timestamp: %w", err)
	}
	if _, err := tm.UpdateSnapshot(p.snapshotRaw, false); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if _, err := tm.UpdateDelegatedTargets(p.targetsRaw, metadata.TARGETS, metadata.ROOT); err != nil {
		return fmt.Errorf("targets: %w", err)
	}
	return nil
}

func rootBytes(r *Root) ([]byte, error) {
	b, err := r.ToBytes(true)
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Create publishes a new repository in outdir (absent or empty) holding the
// regular files of targetsDir, signed under root with o.Signers.
func Create(ctx context.Context, root *Root, targetsDir, outdir string, o Options) (*Result, error) {
	now := o.now()
	if err := Check(root, now); err != nil {
		return nil, err
	}
	if err := Verify(root, nil); err != nil {
		return nil, err
	}
	for _, v := range []struct {
		role string
		v    int64
	}{{"targets", o.TargetsVersion}, {"snapshot", o.SnapshotVersion}, {"timestamp", o.TimestampVersion}} {
		if v.v < 0 {
			return nil, fmt.Errorf("%w: %s version %d is not positive", ErrVersion, v.role, v.v)
		}
	}
	var names []string
	if targetsDir != "" {
		var err error
		if names, err = listTargets(targetsDir); err != nil {
			return nil, err
		}
	}
	s, err := stage(outdir)
	if err != nil {
		return nil, err
	}
	res, err := func() (*Result, error) {
		rb, err := rootBytes(root)
		if err != nil {
			return nil, err
		}
		p := &plan{roots: map[int64][]byte{root.Signed.Version: rb}, root: root,
			targets:   metadata.Targets(expiry(o.TargetsExpires, now, DefaultTargetsLifetime)),
			snapshot:  metadata.Snapshot(expiry(o.SnapshotExpires, now, DefaultSnapshotLifetime)),
			timestamp: metadata.Timestamp(expiry(o.TimestampExpires, now, DefaultTimestampLifetime))}
		p.targets.Signed.Version = orDefault(o.TargetsVersion, 1)
		p.snapshot.Signed.Version = orDefault(o.SnapshotVersion, 1)
		p.timestamp.Signed.Version = orDefault(o.TimestampVersion, 1)
		res := &Result{Dir: outdir}
		for _, name := range names {
			tf, sum, err := s.addTarget(ctx, name, filepath.Join(targetsDir, name), o.Progress)
			if err != nil {
				return nil, err
			}
			p.targets.Signed.Targets[name] = tf
			res.Added = append(res.Added, Target{Name: name, Length: tf.Length, SHA256: sum})
		}
		if err := p.finish(ctx, s, outdir, &o); err != nil {
			return nil, err
		}
		res.fill(p)
		return res, nil
	}()
	if err != nil {
		s.abort()
		return nil, err
	}
	return res, nil
}

func (r *Result) fill(p *plan) {
	r.RootVersion = p.root.Signed.Version
	r.TargetsVersion = p.targets.Signed.Version
	r.SnapshotVersion = p.snapshot.Signed.Version
	r.TimestampVersion = p.timestamp.Signed.Version
	r.Targets = len(p.targets.Signed.Targets)
}

func orDefault(v, d int64) int64 {
	if v > 0 {
		return v
	}
	return d
}
