package updater

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"slices"
	"testing"

	"github.com/updog/updog/repo"
)

// FuzzCheckpoint: arbitrary bytes in checkpoint.json go through the
// store's loader, and those that load through usable (the checks a
// checkpoint must pass to be resumed from), without a panic; so do the
// same bytes with their checksum made right, and a real checkpoint (of an
// interrupted install) edited in two places with its checksum made right.
// A checkpoint with its checksum right always loads (what the writer
// writes, the loader reads), and one usable accepts stays inside the
// signed targets and the inactive partitions.
func FuzzCheckpoint(f *testing.F) {
	fx := newFixtureRoot(f, 8)
	fx.frames = 256 << 10
	fx.rootBytes = 4 << 20
	r := fx.addRelease("1.1.0", nil)
	fx.publish(repo.Options{})
	fi, err := os.Stat(fx.storedTarget(r.names.Root))
	if err != nil {
		f.Fatal(err)
	}
	// A real checkpoint: an install interrupted in the root image.
	ctx, cancel := context.WithCancel(context.Background())
	cs := &countingServer{f: fx, target: r.names.Root, cancel: cancel}
	cs.budget.Store(fi.Size() / 2)
	fx.setHandler(cs)
	u := fx.resumeUpdater(64 << 10)
	if _, err := u.Update(ctx, UpdateOptions{}); !errors.Is(err, context.Canceled) {
		f.Fatalf("interrupted update: %v", err)
	}
	cancel()
	p := u.store.path(checkpointFile)
	saved, err := os.ReadFile(p)
	if err != nil {
		f.Fatalf("no checkpoint after the interruption: %v", err)
	}
	s, err := u.openSession(context.Background(), true, true)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		s.close()
		u.Unlock()
	})
	plan, _, _, _, err := u.decideFor(context.Background(), s.st, CheckOptions{})
	if err != nil {
		f.Fatal(err)
	}
	cp, err := u.store.loadCheckpoint()
	if err != nil {
		f.Fatal(err)
	}
	if why := s.usable(cp, plan); why != "" {
		f.Fatalf("the real checkpoint is not usable: %s", why)
	}
	partSize := map[string]int64{}
	for kind, ref := range s.partRefs() {
		partSize[kind] = int64(ref.LastLBA-ref.FirstLBA+1) * int64(s.t.SectorSize)
	}
	// Seeds: small raw inputs (the fuzzer minimizes what it finds, and
	// that costs the square of an input's length), and edits of the real
	// checkpoint.
	f.Add([]byte(`{}`), uint8(2), uint8(0), int64(0), uint8(0), uint8(0), int64(0), []byte(nil))
	f.Add([]byte(`{"format":1,"images":{"root":null},"partitions":{"root":{}}}`), uint8(2), uint8(fieldIn), int64(1)<<40,
		uint8(2), uint8(fieldOut), int64(-1), []byte(nil))
	f.Add([]byte(`{"format":1,"images":{"root":{"in":-1,"in_state":{"sha256":"AAAA"},"codec":"lz4"}}}`), uint8(2), uint8(fieldDone), int64(1),
		uint8(0), uint8(fieldOut), int64(4096), []byte("x"))
	f.Add([]byte(nil), uint8(2), uint8(fieldInState), int64(0), uint8(2), uint8(fieldCodec), int64(0), []byte("lz4"))
	f.Add([]byte(nil), uint8(2), uint8(fieldCodecState), int64(0), uint8(2), uint8(fieldCodec), int64(0),
		(&lz4Frame{indep: true, maxBlock: 64 << 10, contentSize: -1}).marshal())
	f.Add([]byte(nil), uint8(0), uint8(fieldOutState), int64(0), uint8(1), uint8(fieldPartition), int64(34), []byte("junk"))
	f.Fuzz(func(t *testing.T, raw []byte, k1, f1 uint8, v1 int64, k2, f2 uint8, v2 int64, blob []byte) {
		// Arbitrary bytes as they are: the checksum decides.
		if err := os.WriteFile(p, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		if c, err := u.store.loadCheckpoint(); err == nil {
			s.usable(c, plan)
		}
		// And with the checksum made right: usable decides.
		var c checkpoint
		if json.Unmarshal(raw, &c) == nil {
			checkUsable(t, u, s, plan, p, &c, partSize)
		}
		// The real checkpoint, edited in two places, its checksum made
		// right.
		c = checkpoint{}
		if err := json.Unmarshal(saved, &c); err != nil {
			t.Fatal(err)
		}
		editCheckpointField(&c, k1, f1, v1, blob)
		editCheckpointField(&c, k2, f2, v2, blob)
		checkUsable(t, u, s, plan, p, &c, partSize)
	})
}

// The fields of a checkpoint FuzzCheckpoint edits.
const (
	fieldIn = iota
	fieldOut
	fieldDone
	fieldLength
	fieldCodec
	fieldInState
	fieldOutState
	fieldCodecState
	fieldOutSHA256
	fieldTarget
	fieldNoRestarts
	fieldPartition
	fieldGUID
	fieldSet
	fieldFormat
	fieldNil
	fieldCount
)

// editCheckpointField sets one field of one image (kind: boot, hash, root
// by k%3) of c to v or blob.
func editCheckpointField(c *checkpoint, k, field uint8, v int64, blob []byte) {
	kind := []string{KindBoot, KindHash, KindRoot}[k%3]
	ip := c.Images[kind]
	if ip == nil {
		return
	}
	switch field % fieldCount {
	case fieldIn:
		ip.In = v
	case fieldOut:
		ip.Out = v
	case fieldDone:
		ip.Done = v&1 != 0
	case fieldLength:
		ip.Length = v
	case fieldCodec:
		ip.Codec = Codec(blob)
	case fieldInState:
		algs := slices.Sorted(maps.Keys(ip.InState))
		if len(algs) > 0 {
			ip.InState[algs[0]] = blob
		}
	case fieldOutState:
		ip.OutState = blob
	case fieldCodecState:
		ip.CodecState = blob
	case fieldOutSHA256:
		ip.OutSHA256 = string(blob)
	case fieldTarget:
		ip.Target = string(blob)
	case fieldNoRestarts:
		ip.NoRestarts = v&1 != 0
	case fieldPartition:
		r := c.Partitions[kind]
		r.FirstLBA, r.LastLBA = uint64(v), r.LastLBA+uint64(v)
		c.Partitions[kind] = r
	case fieldGUID:
		r := c.Partitions[kind]
		r.GUID = string(blob)
		c.Partitions[kind] = r
	case fieldSet:
		c.Set = string(blob)
	case fieldFormat:
		c.Format = int(v)
	case fieldNil:
		c.Images[kind] = nil
	}
}

// checkUsable writes c with its checksum made right, loads it (what the
// writer writes, the loader must read), and checks that, when usable
// accepts it, it stays inside the signed targets and the partitions.
func checkUsable(t *testing.T, u *Updater, s *session, plan *Plan, p string, c *checkpoint, partSize map[string]int64) {
	t.Helper()
	// Strings as JSON has them (valid UTF-8: a struct holding others
	// does not survive a round trip, and updog writes none).
	nb, err := json.Marshal(c)
	if err != nil {
		return
	}
	*c = checkpoint{}
	if err := json.Unmarshal(nb, c); err != nil {
		t.Fatal(err)
	}
	c.Sum = c.sum()
	if nb, err = json.Marshal(c); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, nb, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := u.store.loadCheckpoint()
	if err != nil {
		t.Fatalf("a checkpoint with its checksum made right does not load: %v\n%s", err, nb)
	}
	if s.usable(got, plan) != "" {
		return
	}
	for _, img := range plan.Images {
		ip := got.Images[img.Kind]
		switch {
		case ip == nil:
			t.Fatalf("usable accepts a checkpoint without the %s image", img.Kind)
		case ip.In < 0 || ip.In > img.tf.Length || ip.Out < 0 || ip.Out > partSize[img.Kind]:
			t.Fatalf("usable accepts the %s image at %d in (of %d), %d out (of %d)", img.Kind, ip.In, img.tf.Length, ip.Out, partSize[img.Kind])
		case ip.Done && (ip.In != img.tf.Length || img.ImageBytes > 0 && ip.Out != img.ImageBytes):
			t.Fatalf("usable accepts the %s image done at %d in, %d out", img.Kind, ip.In, ip.Out)
		case ip.Codec == CodecRaw && !ip.Done && ip.In != ip.Out:
			t.Fatalf("usable accepts a raw %s image at %d in, %d out", img.Kind, ip.In, ip.Out)
		}
	}
}
