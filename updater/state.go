package updater

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/updog/updog/internal/atomicfile"
	"github.com/updog/updog/internal/flock"
	"github.com/updog/updog/internal/safefile"
)

// The state directory holds:
//
//	lock        flock'ed by the updog that changes the disk (holds its PID)
//	state.json  what updog knows across runs (State), replaced atomically
//	tuf/        the trusted TUF metadata (rollback and freeze protection)
const (
	stateFile = "state.json"
	lockFile  = "lock"
	tufDir    = "tuf"
	// maxStateBytes bounds state.json.
	maxStateBytes = 4 << 20
	// maxFailures bounds the failed-release list (oldest dropped).
	maxFailures = 64
)

// Stages of a pending update.
const (
	// StageWriting: the inactive set was cleared and images are being
	// written (or the write was interrupted).
	StageWriting = "writing"
	// StageWritten: images written and verified; the switch is not made.
	StageWritten = "written"
	// StageApplied: the boot priority was switched to the new set; it is
	// tried at the next boot and must then be marked good.
	StageApplied = "applied"
)

// State is what updog remembers between runs.
type State struct {
	// HostID is a random identity used when /etc/machine-id is missing.
	HostID string `json:"host_id"`
	// Sets records what updog wrote into each set ("a", "b").
	Sets map[string]*SetRecord `json:"sets,omitempty"`
	// Pending is the update in progress, if any.
	Pending *Pending `json:"pending,omitempty"`
	// LastAttempt is the last install, switch or health check and how it
	// ended.
	LastAttempt *Attempt `json:"last_attempt,omitempty"`
	// Failed lists releases that booted and fell back (never marked good)
	// or failed their health checks here: they are skipped unless asked
	// for by name.
	Failed []Failure `json:"failed,omitempty"`
	// Grace records the last time expired metadata was accepted under
	// --offline-grace.
	Grace *GraceUse `json:"offline_grace,omitempty"`
	// Lock is the fleet lock slot this host holds (or kept).
	Lock *LockState `json:"fleet_lock,omitempty"`
	// Waiting is why the last switch waited (cleared by a switch).
	Waiting *Waiting `json:"waiting,omitempty"`
	// Rebooting is set just before updog reboots into a new set.
	Rebooting *time.Time `json:"rebooting,omitempty"`
}

// GraceUse is metadata accepted although expired, within --offline-grace.
type GraceUse struct {
	At        time.Time     `json:"at"`
	ExpiredBy time.Duration `json:"expired_by_ns"`
	From      string        `json:"from,omitempty"`
}

// Release names a release.
type Release struct {
	Variant string `json:"variant"`
	Arch    string `json:"arch"`
	Version string `json:"version"`
}

func (r Release) String() string { return r.Variant + " " + r.Arch + " " + r.Version }

// SetRecord is what a set holds, as written by updog.
type SetRecord struct {
	Release
	WrittenAt time.Time `json:"written_at"`
	Verified  bool      `json:"verified"`
	// Images are the target names written, for status.
	Images map[string]string `json:"images,omitempty"`
	// RootHash is the dm-verity root hash of the root image written.
	RootHash string `json:"verity_root_hash,omitempty"`
	// Source, in status only, says where the record comes from when
	// updog did not write the set ("os-release": the running set).
	Source string `json:"source,omitempty"`
	// Partitions are the partitions written (number, extent, GUID), and
	// Written what each holds: before the switch both are checked again,
	// so a set is never switched to on the state file's word alone.
	Partitions map[string]partRef  `json:"partitions,omitempty"`
	Written    map[string]imageSum `json:"written,omitempty"`
}

// imageSum is an image as written: its length and (boot and hash images)
// its sha256; the root is checked against the dm-verity tree instead.
type imageSum struct {
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256,omitempty"`
}

// Pending is an update between the first write and the first good boot.
type Pending struct {
	Release
	Set       string    `json:"set"`
	Stage     string    `json:"stage"`
	StartedAt time.Time `json:"started_at"`
	// AppliedAt is when the boot priority was switched.
	AppliedAt time.Time `json:"applied_at,omitzero"`
}

// Attempt is the last action taken and its outcome.
type Attempt struct {
	Action  string    `json:"action"`
	Release *Release  `json:"release,omitempty"`
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended,omitzero"`
	Outcome string    `json:"outcome"` // "success", "failed", "interrupted", "in progress"
	Error   string    `json:"error,omitempty"`
	Resumes int       `json:"resumes,omitempty"`
	// Note says what else happened: a checkpoint discarded, or used.
	Note string `json:"note,omitempty"`
}

// Failure is a release that failed here.
type Failure struct {
	Release
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// store is the state directory.
type store struct {
	dir  string
	log  *slog.Logger
	held *flock.Held
	// frozen makes every later write fail (tests: a process killed at
	// that instant writes nothing more).
	frozen atomic.Bool
}

var errFrozen = errors.New("updater: the state directory is frozen (a simulated crash)")

func openStore(dir string) (*store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("state directory %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("state directory %s is not a directory", dir)
	}
	return &store{dir: dir, log: slog.New(slog.DiscardHandler)}, nil
}

// LockedError names the updog that holds the lock.
type LockedError struct {
	Path string
	PID  int
	// What is locked, when not the state directory ("disk /dev/sda").
	What string
}

func (e *LockedError) Error() string {
	what := e.Path
	if e.What != "" {
		what = e.What + " (" + e.Path + ")"
	}
	if e.PID > 0 {
		return fmt.Sprintf("another updog (PID %d) holds %s; try again when it has finished", e.PID, what)
	}
	return fmt.Sprintf("another updog holds %s; try again when it has finished", what)
}

// Is makes a LockedError match ErrLocked.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// lock takes the state lock, waiting up to wait (0: fail at once) for
// another updog to finish; when it cannot, the error names the holder.
func (s *store) lock(ctx context.Context, wait time.Duration) error {
	h, err := flock.LockFile(ctx, filepath.Join(s.dir, lockFile), wait)
	if err != nil {
		var le *flock.LockedError
		if errors.As(err, &le) {
			return &LockedError{Path: filepath.Join(s.dir, lockFile), PID: le.PID}
		}
		return fmt.Errorf("locking the state directory: %w", err)
	}
	s.held = h
	s.cleanTmp()
	return nil
}

// cleanTmp removes what an updog killed mid-run left in the state
// directory's tmp/ (unpacked bundles: whole releases). Only the lock
// holder may: no other updog is using them.
func (s *store) cleanTmp() {
	tmp := s.path("tmp")
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "bundle-") {
			if err := os.RemoveAll(filepath.Join(tmp, e.Name())); err != nil {
				s.log.Warn("could not remove what an earlier updog left", "path", filepath.Join(tmp, e.Name()), "err", err)
			}
		}
	}
}

func (s *store) unlock() { s.held.Release(); s.held = nil }

func (s *store) path(name string) string { return filepath.Join(s.dir, name) }

// load reads state.json; a missing file is an empty state. A damaged
// file, when this updog holds the lock, is set aside (state.json.bad) with
// a warning and updog goes on from an empty state: its own bookkeeping
// must never keep a healthy set from being marked good. Without the lock
// (status) it is an error naming the file.
func (s *store) load() (*State, error) {
	st := &State{}
	b, err := safefile.ReadFile(s.path(stateFile), maxStateBytes)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		if uerr := json.Unmarshal(b, st); uerr != nil {
			if s.held == nil || s.frozen.Load() {
				return nil, fmt.Errorf("%s is damaged (%w); move it away to start afresh", s.path(stateFile), uerr)
			}
			bad := s.path(stateFile + ".bad")
			if err := os.Rename(s.path(stateFile), bad); err != nil {
				return nil, fmt.Errorf("%s is damaged (%w) and could not be set aside: %w", s.path(stateFile), uerr, err)
			}
			s.log.Warn("the state file was damaged: set aside, going on from an empty state (the failed-release list and pending update are forgotten; the disk's boot bits still say what runs)",
				"file", s.path(stateFile), "moved_to", bad, "err", uerr)
			st = &State{}
		}
	}
	if st.Sets == nil {
		st.Sets = map[string]*SetRecord{}
	}
	if _, err := decodeHex16(st.HostID); err != nil {
		st.HostID = s.hostID()
	}
	return st, nil
}

const hostIDFile = "host-id"

// hostID is the host's random identity when state.json has none: read
// from the state directory's host-id file, or made and saved there (a
// link(2) makes the first writer win), so every command, read-only or
// not, sees the same one. Where it cannot be saved (a read-only state
// directory) it is random for this run.
func (s *store) hostID() string {
	p := s.path(hostIDFile)
	read := func() string {
		b, err := safefile.ReadFile(p, 64)
		if err != nil {
			return ""
		}
		id := strings.TrimSpace(string(b))
		if _, err := decodeHex16(id); err != nil {
			return ""
		}
		return id
	}
	if id := read(); id != "" {
		return id
	}
	var raw [16]byte
	rand.Read(raw[:])
	id := hex.EncodeToString(raw[:])
	if s.frozen.Load() {
		return id
	}
	f, err := os.CreateTemp(s.dir, ".host-id-*")
	if err != nil {
		return id
	}
	defer os.Remove(f.Name())
	_, werr := f.WriteString(id + "\n")
	serr := f.Sync()
	cerr := f.Close()
	if werr != nil || serr != nil || cerr != nil {
		return id
	}
	if err := os.Link(f.Name(), p); err == nil {
		atomicfile.SyncDir(s.dir)
		return id
	}
	if other := read(); other != "" {
		return other
	}
	return id
}

// save replaces state.json atomically (temp, fsync, rename, directory
// fsync): a power cut leaves the old or the new state.
func (s *store) save(st *State) error {
	if s.frozen.Load() {
		return errFrozen
	}
	if len(st.Failed) > maxFailures {
		st.Failed = st.Failed[len(st.Failed)-maxFailures:]
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(s.path(stateFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("saving updog state: %w", err)
	}
	return nil
}

// failedBefore reports the recorded failure of a release, if any.
func (st *State) failedBefore(r Release) *Failure {
	for i := len(st.Failed) - 1; i >= 0; i-- {
		if st.Failed[i].Release == r {
			return &st.Failed[i]
		}
	}
	return nil
}

func (st *State) recordFailure(r Release, reason string, at time.Time) {
	st.Failed = append(st.Failed, Failure{Release: r, Reason: reason, At: at.UTC()})
}
