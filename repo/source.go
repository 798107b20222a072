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
		return f.DownloadFile(fetch.Join(metaURL, name), max, 0)
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
	if ex.timestamp, err = metadata.Timestamp().FromBytes(tsRaw); err != nil {
		return nil, fmt.Errorf("timestamp.json: %w", err)
	}
	if err := ex.latest.VerifyDelegate(metadata.TIMESTAMP, ex.timestamp); err != nil {
		return nil, fmt.Errorf("%w: timestamp.json: %v", ErrThreshold, err)
	}
	sm, ok := ex.timestamp.Signed.Meta["snapshot.json"]
	if !ok {
		return nil, errors.New("repo: timestamp.json lists no snapshot.json")
	}
	snapName := "snapshot.json"
	if ex.latest.Signed.ConsistentSnapshot {
		snapName = strconv.FormatInt(sm.Version, 10) + ".snapshot.json"
	}
	if ex.snapshotRaw, err = get(snapName, maxSnapshotBytes); err != nil {
		return nil, fmt.Errorf("reading %s: %w", snapName, err)
	}
	if err := sm.VerifyLengthHashes(ex.snapshotRaw); err != nil {
		return nil, fmt.Errorf("%s does not match timestamp.json: %w", snapName, err)
	}
	if ex.snapshot, err = metadata.Snapshot().FromBytes(ex.snapshotRaw); err != nil {
		return nil, fmt.Errorf("%s: %w", snapName, err)
	}
	if err := ex.latest.VerifyDelegate(metadata.SNAPSHOT, ex.snapshot); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrThreshold, snapName, err)
	}
	tm, ok := ex.snapshot.Signed.Meta["targets.json"]
	if !ok {
		return nil, errors.New("repo: the snapshot lists no targets.json")
	}
	targName := "targets.json"
	if ex.latest.Signed.ConsistentSnapshot {
		targName = strconv.FormatInt(tm.Version, 10) + ".targets.json"
	}
	if ex.targetsRaw, err = get(targName, maxTargetsBytes); err != nil {
		return nil, fmt.Errorf("reading %s: %w", targName, err)
	}
	if err := tm.VerifyLengthHashes(ex.targetsRaw); err != nil {
		return nil, fmt.Errorf("%s does not match the snapshot: %w", targName, err)
	}
	if ex.targets, err = metadata.Targets().FromBytes(ex.targetsRaw); err != nil {
		return nil, fmt.Errorf("%s: %w", targName, err)
	}
	if err := ex.latest.VerifyDelegate(metadata.TARGETS, ex.targets); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrThreshold, targName, err)
	}
	if fetch.IsLocal(metaURL) {
		ex.targetsDir = filepath.Join(filepath.Dir(filepath.Clean(localDir(metaURL))), "targets")
	}
	return ex, nil
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
