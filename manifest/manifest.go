package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/updog/updog/waves"
)

// Sentinel errors.
var (
	// ErrInvalid means a manifest fails validation; the error lists every
	// problem found.
	ErrInvalid = errors.New("manifest: invalid")
	// ErrNoUpdate means no release applies to the host.
	ErrNoUpdate = errors.New("manifest: no update available")
	// ErrVersionNotFound means a locked or requested version is not offered.
	ErrVersionNotFound = errors.New("manifest: requested version not found")
	// ErrNotFound means no release matches variant, arch and version.
	ErrNotFound = errors.New("manifest: no such release")
	// ErrDuplicate means a release with the same variant, arch and version
	// already exists.
	ErrDuplicate = errors.New("manifest: release already exists")
)

// Manifest is manifest.json.
type Manifest struct {
	Updates    []*Update
	Migrations Migrations
	extra      object
}

// Update is one release of one variant and architecture.
type Update struct {
	Variant    string
	Arch       string
	Version    Version
	MaxVersion Version
	Waves      Waves
	Images     Images
	// Pauses of the rollout (our addition, "pauses").
	Pauses []waves.Pause
	extra  object
}

// Images names the update's image targets.
type Images struct {
	Boot, Root, Hash string
	// Sizes are the uncompressed sizes in bytes (our addition, optional).
	Sizes *ImageSizes
	// Verity describes the root image's dm-verity tree (our addition,
	// optional).
	Verity *Verity
	// Delta names the release's delta artifacts (our addition, optional;
	// clients that do not know it, and releases without it, install in
	// full).
	Delta *Delta
	extra object
}

// Delta names the two targets a host needs to install the root image by
// delta (see package delta): the seekable root image, and its index. Both
// are TUF targets of their own, so the targets metadata pins their length
// and sha256.
type Delta struct {
	Seekable string `json:"seekable"`
	Index    string `json:"index"`
}

// ImageSizes are uncompressed image sizes in bytes.
type ImageSizes struct {
	Boot int64 `json:"boot"`
	Root int64 `json:"root"`
	Hash int64 `json:"hash"`
}

// Verity is what a host needs to check the root image it wrote against the
// hash image it wrote, before switching sets.
type Verity struct {
	RootHash      string `json:"root_hash"`
	Salt          string `json:"salt"`
	Hash          string `json:"hash,omitempty"`
	DataBlockSize int    `json:"data_block_size,omitempty"`
	HashBlockSize int    `json:"hash_block_size,omitempty"`
	DataBlocks    uint64 `json:"data_blocks,omitempty"`
}

// WaveTime is a wave's start time with the text it was written as, so
// unedited waves are written back byte for byte.
type WaveTime struct {
	time.Time
	text string
}

// WaveEntry is one wave of an update: from Start on, seeds from Seed.
type WaveEntry struct {
	Seed  uint32
	Start WaveTime
}

// Waves are an update's waves in seed order.
type Waves []WaveEntry

// Migration is one entry of the migrations map.
type Migration struct {
	From, To Version
	Names    []string
	key      string // as written
}

// Migrations are the manifest's migrations, in document order.
type Migrations []Migration

// Parse decodes a manifest. Syntax errors, duplicate keys, bad versions,
// wave keys that are not unsigned 32-bit integers and times that are not
// RFC 3339 are errors here; the rest is Validate's.
func Parse(data []byte) (*Manifest, error) {
	o, err := decodeObject(data, "manifest")
	if err != nil {
		return nil, err
	}
	m := &Manifest{}
	var updates []json.RawMessage
	if err := o.takeInto("updates", &updates, true, "manifest"); err != nil {
		return nil, err
	}
	for i, raw := range updates {
		u, err := parseUpdate(raw, fmt.Sprintf("updates[%d]", i))
		if err != nil {
			return nil, err
		}
		m.Updates = append(m.Updates, u)
	}
	if raw, ok := o.take("migrations"); ok {
		if m.Migrations, err = parseMigrations(raw); err != nil {
			return nil, err
		}
	}
	m.extra = o
	return m, nil
}

func parseUpdate(raw []byte, what string) (*Update, error) {
	o, err := decodeObject(raw, what)
	if err != nil {
		return nil, err
	}
	u := &Update{}
	for _, f := range []struct {
		key string
		dst any
	}{{"variant", &u.Variant}, {"arch", &u.Arch}, {"version", &u.Version}, {"max_version", &u.MaxVersion}} {
		if err := o.takeInto(f.key, f.dst, true, what); err != nil {
			return nil, err
		}
	}
	if rw, ok := o.take("waves"); ok {
		if u.Waves, err = parseWaves(rw, what+".waves"); err != nil {
			return nil, err
		}
	} else {
		return nil, fmt.Errorf("%s: %q is missing", what, "waves")
	}
	ri, ok := o.take("images")
	if !ok {
		return nil, fmt.Errorf("%s: %q is missing", what, "images")
	}
	if u.Images, err = parseImages(ri, what+".images"); err != nil {
		return nil, err
	}
	var pauses []struct {
		From time.Time  `json:"from"`
		To   *time.Time `json:"to,omitempty"`
	}
	if err := o.takeInto("pauses", &pauses, false, what); err != nil {
		return nil, err
	}
	for i, p := range pauses {
		wp := waves.Pause{From: p.From}
		if p.To != nil {
			wp.To = *p.To
		}
		for _, t := range []time.Time{wp.From, wp.To} {
			if err := checkTimeRange(t); err != nil {
				return nil, fmt.Errorf("%s: pauses[%d]: %w", what, i, err)
			}
		}
		u.Pauses = append(u.Pauses, wp)
	}
	u.extra = o
	return u, nil
}

func parseImages(raw []byte, what string) (Images, error) {
	o, err := decodeObject(raw, what)
	if err != nil {
		return Images{}, err
	}
	var im Images
	for _, f := range []struct {
		key string
		dst *string
	}{{"boot", &im.Boot}, {"root", &im.Root}, {"hash", &im.Hash}} {
		if err := o.takeInto(f.key, f.dst, true, what); err != nil {
			return im, err
		}
	}
	if err := o.takeInto("sizes", &im.Sizes, false, what); err != nil {
		return im, err
	}
	if err := o.takeInto("verity", &im.Verity, false, what); err != nil {
		return im, err
	}
	if err := o.takeInto("delta", &im.Delta, false, what); err != nil {
		return im, err
	}
	im.extra = o
	return im, nil
}

func parseWaves(raw []byte, what string) (Waves, error) {
	o, err := decodeObject(raw, what)
	if err != nil {
		return nil, err
	}
	var ws Waves
	seen := map[uint64]string{}
	for _, f := range o {
		seed, err := strconv.ParseUint(f.key, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%s: wave key %q is not an unsigned 32-bit seed", what, f.key)
		}
		if prev, dup := seen[seed]; dup {
			return nil, fmt.Errorf("%s: wave keys %q and %q are the same seed, %d, twice", what, prev, f.key, seed)
		}
		seen[seed] = f.key
		var text string
		if err := json.Unmarshal(f.val, &text); err != nil {
			return nil, fmt.Errorf("%s: wave %s: the time is not a string", what, f.key)
		}
		t, err := ParseTime(text)
		if err != nil {
			return nil, fmt.Errorf("%s: wave %s: %w", what, f.key, err)
		}
		ws = append(ws, WaveEntry{Seed: uint32(seed), Start: WaveTime{t, text}})
	}
	slices.SortFunc(ws, func(a, b WaveEntry) int { return int(int64(a.Seed) - int64(b.Seed)) })
	return ws, nil
}

// rfc3339ish accepts RFC 3339 and, as Bottlerocket (chrono) does,
// single-digit months, days and hours, as in "2019-8-06T15:00:00Z".
var rfc3339ish = regexp.MustCompile(`^(\d{4})-(\d{1,2})-(\d{1,2})[Tt ](\d{1,2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$`)

// ErrTime means a time is not RFC 3339.
var ErrTime = errors.New("manifest: not an RFC 3339 time")

// ParseTime parses an RFC 3339 time, leniently about zero padding.
func ParseTime(s string) (time.Time, error) {
	m := rfc3339ish.FindStringSubmatch(s)
	if m == nil {
		return time.Time{}, fmt.Errorf("%w: %q", ErrTime, s)
	}
	pad := func(x string) string {
		if len(x) == 1 {
			return "0" + x
		}
		return x
	}
	norm := fmt.Sprintf("%s-%s-%sT%s:%s:%s%s%s", m[1], pad(m[2]), pad(m[3]), pad(m[4]), m[5], m[6], m[7], strings.ToUpper(m[8]))
	t, err := time.Parse(time.RFC3339Nano, norm)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %q: %w", ErrTime, s, err)
	}
	if err := checkTimeRange(t); err != nil {
		return time.Time{}, fmt.Errorf("%w: %q: %w", ErrTime, s, err)
	}
	return t.UTC(), nil
}

// checkTimeRange refuses a time that is outside the years 0000 to 9999 in
// UTC (as "9999-12-31T23:00:00-05:00" is): it could not be written back.
func checkTimeRange(t time.Time) error {
	if t.Before(waves.MinTime) || t.After(waves.MaxTime) {
		return fmt.Errorf("%s is outside the years 0000 to 9999 in UTC", t.UTC())
	}
	return nil
}

var migrationKey = regexp.MustCompile(`^\(\s*([^,\s]+)\s*,\s*([^)\s]+)\s*\)$`)

func parseMigrations(raw []byte) (Migrations, error) {
	o, err := decodeObject(raw, "migrations")
	if err != nil {
		return nil, err
	}
	var ms Migrations
	for _, f := range o {
		m := migrationKey.FindStringSubmatch(f.key)
		if m == nil {
			return nil, fmt.Errorf("migrations: key %q is not \"(from, to)\"", f.key)
		}
		from, err := ParseVersion(m[1])
		if err != nil {
			return nil, fmt.Errorf("migrations: %q: %w", f.key, err)
		}
		to, err := ParseVersion(m[2])
		if err != nil {
			return nil, fmt.Errorf("migrations: %q: %w", f.key, err)
		}
		var names []string
		if err := json.Unmarshal(f.val, &names); err != nil {
			return nil, fmt.Errorf("migrations: %q: want a list of names: %w", f.key, err)
		}
		ms = append(ms, Migration{From: from, To: to, Names: names, key: f.key})
	}
	return ms, nil
}

// MarshalJSON writes the manifest: known fields in Bottlerocket's order,
// then unknown fields as they were read.
func (m *Manifest) MarshalJSON() ([]byte, error) {
	updates := make([]json.RawMessage, 0, len(m.Updates))
	for _, u := range m.Updates {
		b, err := u.marshal()
		if err != nil {
			return nil, err
		}
		updates = append(updates, b)
	}
	return encode([]field{{"updates", raw(updates, false)}, {"migrations", m.Migrations.marshal()}}, m.extra)
}

// Encode writes the manifest as indented JSON with a final newline.
func (m *Manifest) Encode() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

func (u *Update) marshal() ([]byte, error) {
	type pause struct {
		From time.Time  `json:"from"`
		To   *time.Time `json:"to,omitempty"`
	}
	// Refuse what could not be read back: RFC 3339 has four-digit years.
	for _, w := range u.Waves {
		if w.Start.Before(waves.MinTime) || w.Start.After(waves.MaxTime) {
			return nil, fmt.Errorf("manifest: %s: the wave at seed %d starts at %s, outside the years 0000 to 9999", u, w.Seed, w.Start.UTC())
		}
	}
	var pauses []pause
	for _, p := range u.Pauses {
		if p.From.Before(waves.MinTime) || p.From.After(waves.MaxTime) || (!p.To.IsZero() && (p.To.Before(waves.MinTime) || p.To.After(waves.MaxTime))) {
			return nil, fmt.Errorf("manifest: %s: a pause (%s to %s) lies outside the years 0000 to 9999", u, p.From.UTC(), p.To.UTC())
		}
		pp := pause{From: p.From.UTC()}
		if !p.To.IsZero() {
			to := p.To.UTC()
			pp.To = &to
		}
		pauses = append(pauses, pp)
	}
	images, err := u.Images.marshal()
	if err != nil {
		return nil, err
	}
	return encode([]field{
		{"variant", raw(u.Variant, false)},
		{"arch", raw(u.Arch, false)},
		{"version", raw(u.Version, false)},
		{"max_version", raw(u.MaxVersion, false)},
		{"waves", u.Waves.marshal()},
		{"images", images},
		{"pauses", raw(pauses, len(pauses) == 0)},
	}, u.extra)
}

func (im Images) marshal() ([]byte, error) {
	return encode([]field{
		{"boot", raw(im.Boot, false)},
		{"root", raw(im.Root, false)},
		{"hash", raw(im.Hash, false)},
		{"sizes", raw(im.Sizes, im.Sizes == nil)},
		{"verity", raw(im.Verity, im.Verity == nil)},
		{"delta", raw(im.Delta, im.Delta == nil)},
	}, im.extra)
}

func (ws Waves) marshal() json.RawMessage {
	var o object
	for _, w := range ws {
		text := w.Start.text
		if text == "" {
			text = w.Start.UTC().Format(time.RFC3339)
		}
		o = append(o, field{strconv.FormatUint(uint64(w.Seed), 10), raw(text, false)})
	}
	b, _ := encode(nil, o)
	return b
}

func (ms Migrations) marshal() json.RawMessage {
	var o object
	for _, m := range ms {
		key := m.key
		if key == "" {
			key = fmt.Sprintf("(%s, %s)", m.From, m.To)
		}
		names := m.Names
		if names == nil {
			names = []string{}
		}
		o = append(o, field{key, raw(names, false)})
	}
	b, _ := encode(nil, o)
	return b
}

// Schedule converts the update's waves and pauses for the waves package.
func (u *Update) Schedule() waves.Schedule {
	s := waves.Schedule{Pauses: u.Pauses}
	for _, w := range u.Waves {
		s.Waves = append(s.Waves, waves.Wave{Seed: w.Seed, Start: w.Start.Time})
	}
	return s
}

// SetSchedule replaces the update's waves (pauses are kept).
func (u *Update) SetSchedule(s waves.Schedule) {
	u.Waves = nil
	for _, w := range s.Waves {
		u.Waves = append(u.Waves, WaveEntry{Seed: w.Seed, Start: WaveTime{Time: w.Start.UTC()}})
	}
}

func (u *Update) String() string {
	return fmt.Sprintf("%s %s %s", u.Variant, u.Arch, u.Version)
}
