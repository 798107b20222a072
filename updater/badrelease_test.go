package updater

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/updog/updog/repo"
)

// A release whose root had a byte flipped after its dm-verity tree was
// made (signed as it is): refused before the switch, recorded as failed,
// and skipped by check-update and update from then on, unless named.
func TestBadReleaseRecordedAndSkipped(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.makeRelease("1.1.0")
	r.root[len(r.root)/3] ^= 0x01
	f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	err := f.attempt(ErrCorrupt)
	var bad *badRelease
	if !errors.As(err, &bad) {
		t.Fatalf("a root that does not verify against its own tree is not the release's fault: %v", err)
	}
	u := f.updater()
	defer u.Unlock()
	st, serr := u.Status(context.Background())
	if serr != nil {
		t.Fatal(serr)
	}
	if len(st.Failed) != 1 || st.Failed[0].Version != "1.1.0" {
		t.Fatalf("failed releases %+v, want 1.1.0", st.Failed)
	}
	if _, err := u.Check(context.Background(), CheckOptions{}); !errors.Is(err, ErrNoUpdate) {
		t.Fatalf("check-update after the refused release: %v, want no update", err)
	}
	if _, err := u.Update(context.Background(), UpdateOptions{Apply: true}); !errors.Is(err, ErrNoUpdate) {
		t.Fatalf("update after the refused release: %v, want no update", err)
	}
	// Named, it is tried again (and refused again).
	if _, err := u.Update(context.Background(), UpdateOptions{CheckOptions: CheckOptions{Image: "1.1.0"}, Apply: true}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("update --image 1.1.0: %v", err)
	}
}

// A download that does not match its signed hash (a bad mirror, a proxy)
// is not the release's fault: not recorded, tried again next time.
func TestTamperedDownloadNotRecorded(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	r := f.addRelease("1.1.0", nil)
	f.publish(repo.Options{})
	p := f.storedTarget(r.names.Root)
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	f.attempt()
	u := f.updater()
	defer u.Unlock()
	st, err := u.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Failed) != 0 {
		t.Fatalf("a tampered download marked the release failed: %+v", st.Failed)
	}
}
