package updater

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/testutil"
	"github.com/updog/updog/manifest"
	"github.com/updog/updog/repo"
	"github.com/updog/updog/signing"
)

// Each attack or bad input: a clear error matching its sentinel, the
// active set bit-for-bit unchanged, the inactive set not bootable.

func (f *fixture) storedTarget(name string) string {
	f.t.Helper()
	m, _ := filepath.Glob(filepath.Join(f.repoDir, "targets", "*."+name))
	if len(m) != 1 {
		f.t.Fatalf("stored target %s: %v", name, m)
	}
	return m[0]
}

// attempt runs update and checks the safety promise and the error.
func (f *fixture) attempt(want ...error) error {
	f.t.Helper()
	before := f.snapshotActive()
	u := f.updater()
	_, err := u.Update(context.Background(), UpdateOptions{Apply: true})
	if err == nil {
		f.t.Fatal("the update succeeded")
	}
	for _, w := range want {
		if !errors.Is(err, w) {
			f.t.Errorf("error %v\ndoes not match %v", err, w)
		}
	}
	f.assertSafe(before)
	u.Unlock()
	return err
}

func TestAttackTamperedImage(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	p := f.storedTarget(r.names.Root)
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 0x40
	os.WriteFile(p, b, 0o644)
	f.attempt(ErrUntrusted)
}

func TestAttackTruncatedImage(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	p := f.storedTarget(r.names.Root)
	b, _ := os.ReadFile(p)
	os.WriteFile(p, b[:len(b)-100], 0o644)
	f.attempt(ErrUntrusted)
}

func TestAttackWrongLength(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	p := f.storedTarget(r.names.Boot)
	b, _ := os.ReadFile(p)
	os.WriteFile(p, append(b, make([]byte, 4096)...), 0o644)
	f.attempt(ErrUntrusted)
}

func TestAttackEndlessData(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	f.setHandler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasSuffix(req.URL.Path, r.names.Root) {
			buf := bytes.Repeat([]byte{0x28}, 64<<10)
			for i := 0; i < 1<<14; i++ { // up to 1 GiB, never ending as far as the client knows
				if _, err := w.Write(buf); err != nil {
					return
				}
			}
			return
		}
		f.fileServer().ServeHTTP(w, req)
	}))
	f.attempt(ErrUntrusted)
}

// Signed trailing bytes: the target is exactly what was signed, but its
// compressed stream ends before the object does.
// (xz is covered at the decoder level in decode_test.go: its Go decoder is
// too slow under the race detector for a whole install per case.)
func TestAttackTrailingBytes(t *testing.T) {
	t.Parallel()
	for _, c := range []Codec{CodecLZ4, CodecZstd, CodecGzip} {
		t.Run(string(c), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			f.codec = c
			f.addRelease("1.1.0", func(u *manifest.Update, files map[string][]byte) {
				files[u.Images.Root] = append(files[u.Images.Root], []byte("EVIL")...)
			})
			f.publish(repo.Options{})
			err := f.attempt()
			if !errors.Is(err, ErrTrailingData) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("trailing bytes: %v", err)
			}
		})
	}
}

// The Bottlerocket lz4 frame with 4 bytes appended (shared test data).
func TestAttackTrailingBytesBottlerocketLZ4(t *testing.T) {
	t.Parallel()
	dir := testutil.Bottlerocket(t, "lz4")
	evil, err := os.ReadFile(filepath.Join(dir, "sample.raw.lz4.trailing-garbage"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDecoder(bytes.NewReader(evil), 1)
	if err != nil || d.codec != CodecLZ4 {
		t.Fatalf("%v %v", d, err)
	}
	n, err := io.Copy(io.Discard, d)
	if err == nil && d.leftover() == 0 {
		t.Fatalf("decoded %d bytes and saw nothing after the frame", n)
	}
}

func TestAttackExpiredTimestamp(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{TimestampExpires: f.now.Add(time.Hour)})
	f.now = f.now.Add(2 * time.Hour)
	f.attempt(ErrMetadataExpired)
}

// A frozen repository: the timestamp never advances, so once it expires
// the host refuses it instead of staying on stale metadata forever.
func TestAttackFrozenRepository(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{TimestampExpires: f.now.Add(24 * time.Hour)})
	u := f.updater()
	if _, err := u.Check(context.Background(), CheckOptions{}); err != nil {
		t.Fatal(err)
	}
	u.Unlock()
	f.now = f.now.Add(25 * time.Hour)
	f.attempt(ErrMetadataExpired)
}

func TestAttackTimestampRollback(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	old := f.repoDir
	f.addRelease("1.2.0", nil)
	f.publish(repo.Options{})
	u := f.updater()
	if _, err := u.Check(context.Background(), CheckOptions{}); err != nil {
		t.Fatal(err)
	}
	u.Unlock()
	f.mu.Lock()
	f.repoDir = old // the mirror serves the older repository
	f.mu.Unlock()
	f.attempt(ErrRollback)
}

// A snapshot rollback: a newer, validly signed timestamp that points at an
// older snapshot than the host has seen.
func TestAttackSnapshotRollback(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	first := f.repoDir
	f.addRelease("1.2.0", nil)
	f.publish(repo.Options{})
	u := f.updater()
	if _, err := u.Check(context.Background(), CheckOptions{}); err != nil {
		t.Fatal(err)
	}
	u.Unlock()
	// Build the attack repository: the newest metadata, but a timestamp
	// (re-signed with the real key, as a compromised timestamp key would)
	// naming the first snapshot.
	evil := filepath.Join(f.dir, "evil")
	if out, err := exec.Command("cp", "-a", f.repoDir, evil).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	firstTS, err := metadata.Timestamp().FromFile(filepath.Join(first, "metadata", "timestamp.json"))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := metadata.Timestamp().FromFile(filepath.Join(f.repoDir, "metadata", "timestamp.json"))
	if err != nil {
		t.Fatal(err)
	}
	snapName := "snapshot.json"
	old := firstTS.Signed.Meta[snapName]
	b, _ := os.ReadFile(filepath.Join(first, "metadata", "1.snapshot.json"))
	os.WriteFile(filepath.Join(evil, "metadata", "1.snapshot.json"), b, 0o644)
	ts.Signed.Meta[snapName] = old
	ts.Signed.Version++
	ts.Signatures = nil
	if err := signing.SignMetadata(context.Background(), ts, f.signers[0]); err != nil {
		t.Fatal(err)
	}
	if err := ts.ToFile(filepath.Join(evil, "metadata", "timestamp.json"), false); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.repoDir = evil
	f.mu.Unlock()
	f.attempt(ErrRollback)
}

func TestAttackImageLargerThanPartition(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", func(u *manifest.Update, _ map[string][]byte) {
		u.Images.Sizes.Root = 64 << 20 // the ROOT partitions are 8 MiB
	})
	f.publish(repo.Options{})
	f.mu.Lock()
	f.requests = 0
	f.mu.Unlock()
	err := f.attempt(ErrImageTooLarge)
	if !strings.Contains(err.Error(), "nothing was written") {
		t.Errorf("error does not say nothing was written: %v", err)
	}
}

// A decompression bomb: a small signed stream that expands past the
// partition, with no sizes in the manifest to refuse it up front. (It is
// the hash image: a bomb in the root image is refused even sooner, at its
// first block, by the dm-verity check.)
// (xz: see decode_test.go.)
func TestAttackDecompressionBomb(t *testing.T) {
	t.Parallel()
	for _, c := range []Codec{CodecZstd, CodecLZ4, CodecGzip} {
		t.Run(string(c), func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			f.codec = c
			bomb := compress(t, c, make([]byte, 24<<20)) // the HASH partitions are 10 MiB
			f.addRelease("1.1.0", func(u *manifest.Update, files map[string][]byte) {
				u.Images.Sizes = nil
				files[u.Images.Hash] = bomb
			})
			f.publish(repo.Options{})
			f.attempt(ErrImageTooLarge)
		})
	}
}

func TestAttackCorruptCompressedStream(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", func(u *manifest.Update, files map[string][]byte) {
		b := files[u.Images.Root]
		for i := 100; i < len(b)-100 && i < 2000; i++ {
			b[i] ^= 0x5a
		}
	})
	f.publish(repo.Options{})
	f.attempt(ErrCorrupt)
}

func TestAttackWrongVerityRootHash(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", func(u *manifest.Update, _ map[string][]byte) {
		u.Images.Verity.RootHash = hex.EncodeToString(bytes.Repeat([]byte{0xab}, 32))
	})
	f.publish(repo.Options{})
	f.attempt(ErrCorrupt)
}

// A hash image that does not describe the root image (the right size,
// the signatures all fine): caught before the switch.
func TestAttackMismatchedHashImage(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	other := f.makeRelease("9.9.9")
	f.addRelease("1.1.0", func(u *manifest.Update, files map[string][]byte) {
		u.Images.Verity = nil
		files[u.Images.Hash] = compress(t, f.codec, other.hash)
	})
	f.publish(repo.Options{})
	f.attempt(ErrCorrupt)
}

func TestAttackDiskWithoutSecondSet(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	// Turn BOOT-B, ROOT-B and HASH-B into reserved partitions.
	d, err := gptprio.OpenDisk(context.Background(), f.disk, gptprio.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = d.Update(context.Background(), func(t *gptprio.Table, l gptprio.Layout) (*gptprio.Table, error) {
		nt := t.Clone()
		for _, n := range []int{l.Sets[1].Boot, l.Sets[1].Root, l.Sets[1].Hash} {
			nt.Partitions[n-1].Type = gptprio.MustParseGUID("0c5d99a5-d331-4147-baef-08e2b855bdc9")
		}
		return nt, nil
	})
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	u := f.updater()
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); !errors.Is(err, ErrNoInactiveSet) {
		t.Fatalf("single-set disk: %v", err)
	}
}

// A full state directory: the install cannot record what it does, so it
// does nothing (or stops before the switch).
func TestAttackFullStateDirectory(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		testutil.Missing(t, "mounting a small tmpfs needs root")
	}
	f := newFixture(t)
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	state := filepath.Join(f.dir, "fullstate")
	os.MkdirAll(state, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", state).CombinedOutput(); err != nil {
		testutil.Missing(t, "mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", state).Run() })
	f.cfg.StateDir = state
	// Fill it.
	fill, _ := os.Create(filepath.Join(state, "filler"))
	fill.Write(make([]byte, 1<<20))
	fill.Close()
	before := f.snapshotActive()
	u, err := New(Options{Config: f.cfg, Disk: f.disk, Active: "a", Now: func() time.Time { return f.now }})
	if err != nil {
		t.Fatal(err)
	}
	err = u.Lock(context.Background())
	if err == nil {
		_, err = u.Update(context.Background(), UpdateOptions{Apply: true})
		u.Unlock()
	}
	if err == nil {
		t.Fatal("update with a full state directory succeeded")
	}
	t.Logf("full state directory: %v", err)
	f.assertSafe(before)
}
