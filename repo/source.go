package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"

	"github.com/secure-systems-lab/go-securesystemslib/cjson"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/updog/updog/internal/fetch"
)

// Limits on metadata read from a repository (go-tuf's defaults).
const (
	maxRootBytes      = 512000
	maxTimestampBytes = 16384
	maxSnapshotBytes  = 2000000
	maxTargetsBytes   = 5000000
	maxRootVersions   = 1024
)

// existing is a repository as read from its metadata location, its
// signatures checked against its own root chain but its expiry not
// enforced: refreshing an expired timestamp is what updates are for.
type existing struct {
	roots       map[int64][]byte
	latest      *Root
	timestamp   *metadata.Metadata[metadata.TimestampType]
	snapshot    *metadata.Metadata[metadata.SnapshotType]
	snapshotRaw []byte
	targets     *metadata.Metadata[metadata.TargetsType]
	targetsRaw  []byte
	// targetsDir is the local directory of stored targets, when the
	// metadata came from a local REPO/metadata.
	targetsDir string
}

func isNotFound(err error) bool {
	var he *metadata.ErrDownloadHTTP
	return errors.As(err, &he) && he.StatusCode == http.StatusNotFound
}

// loadExisting reads the root chain from 1.root.json up, then timestamp,
// snapshot and targets, verifying each signature and hash on the way.
func loadExisting(ctx context.Context, f *fetch.Fetcher, metaURL string) (*existing, error) {
	get := func(name string, max int64) ([]byte, error) {
		return f.Fetch(ctx, fetch.Join(metaURL, name), max)
	}
	ex := &existing{roots: map[int64][]byte{}}
	for v := int64(1); v <= maxRootVersions; v++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b, err := get(strconv.FormatInt(v, 10)+".root.json", maxRootBytes)
		if isNotFound(err) && v > 1 {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading root version %d from %s: %w", v, metaURL, err)
		}
		r, err := ParseRoot(b)
		if err != nil {
			return nil, fmt.Errorf("root version %d: %w", v, err)
		}
		if r.Signed.Version != v {
			return nil, fmt.Errorf("%w: %d.root.json says it is version %d", ErrRoot, v, r.Signed.Version)
		}
		if err := Verify(r, ex.latest); err != nil {
			return nil, err
		}
		ex.roots[v], ex.latest = b, r
	}
	tsRaw, err := get("timestamp.json", maxTimestampBytes)
	if err != nil {
		return nil, fmt.Errorf("reading timestamp.json from %s: %w", metaURL, err)
	}
	if ex.timestamp, err = verifiedRole(ex.latest, metadata.TIMESTAMP, tsRaw, metadata.Timestamp().FromBytes); err != nil {
		return nil, err
	}
	if ex.snapshotRaw, err = fetchListed(ex.latest, ex.timestamp.Signed.Meta, "snapshot.json", "timestamp.json", maxSnapshotBytes, get); err != nil {
		return nil, err
	}
	if ex.snapshot, err = verifiedRole(ex.latest, metadata.SNAPSHOT, ex.snapshotRaw, metadata.Snapshot().FromBytes); err != nil {
		return nil, err
	}
	if ex.targetsRaw, err = fetchListed(ex.latest, ex.snapshot.Signed.Meta, "targets.json", "the snapshot", maxTargetsBytes, get); err != nil {
		return nil, err
	}
	if ex.targets, err = verifiedRole(ex.latest, metadata.TARGETS, ex.targetsRaw, metadata.Targets().FromBytes); err != nil {
		return nil, err
	}
	if fetch.IsLocal(metaURL) {
		ex.targetsDir = filepath.Join(filepath.Dir(filepath.Clean(localDir(metaURL))), "targets")
	}
	return ex, nil
}

// fetchListed reads the metadata file that lister's meta lists under name
// (N.name with consistent snapshots) and checks it against the listed
// length and hashes.
func fetchListed(root *Root, meta map[string]*metadata.MetaFiles, name, lister string, max int64, get func(string, int64) ([]byte, error)) ([]byte, error) {
	m, ok := meta[name]
	if !ok {
		return nil, fmt.Errorf("repo: %s lists no %s", lister, name)
	}
	file := name
	if root.Signed.ConsistentSnapshot {
		file = strconv.FormatInt(m.Version, 10) + "." + name
	}
	b, err := get(file, max)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	if err := m.VerifyLengthHashes(b); err != nil {
		return nil, fmt.Errorf("%s does not match %s: %w", file, lister, err)
	}
	return b, nil
}

// verifiedRole parses a role's metadata and checks its signatures against
// root (not its expiry).
func verifiedRole[T metadata.Roles](root *Root, role string, raw []byte, parse func([]byte) (*metadata.Metadata[T], error)) (*metadata.Metadata[T], error) {
	md, err := parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%s metadata: %w", role, err)
	}
	if err := root.VerifyDelegate(role, md); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrThreshold, role, err)
	}
	return md, nil
}

func localDir(loc string) string {
	if len(loc) > 7 && loc[:7] == "file://" {
		return loc[7:]
	}
	return loc
}

// sameSigned reports whether two roots sign the same content.
func sameSigned(a, b *Root) bool {
	ca, err1 := cjson.EncodeCanonical(a.Signed)
	cb, err2 := cjson.EncodeCanonical(b.Signed)
	return err1 == nil && err2 == nil && bytes.Equal(ca, cb)
}
