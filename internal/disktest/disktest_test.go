package disktest

import (
	"errors"
	"testing"
)

func content(t *testing.T, m *Mem, off int64, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := m.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestLogAndFaults(t *testing.T) {
	m := New(1<<20, 512)
	m.WriteAt([]byte("abc"), 10)
	m.Sync()
	if log := m.Log(); len(log) != 2 || log[0].Kind != OpWrite || log[0].Off != 10 || log[1].Kind != OpSync {
		t.Fatalf("log %v", log)
	}
	m.ResetLog()
	m.FailAt(1, nil)
	if _, err := m.WriteAt([]byte("x"), 0); err != nil {
		t.Fatal(err)
	}
	if err := m.Sync(); !errors.Is(err, ErrInjected) {
		t.Fatalf("second op: %v", err)
	}
	m.ClearFaults()
	m.FailOffset(4096)
	if _, err := m.ReadAt(make([]byte, 10), 4090); !errors.Is(err, ErrInjected) {
		t.Fatalf("read over bad offset: %v", err)
	}
	if _, err := m.WriteAt([]byte("x"), 1<<20); err == nil {
		t.Fatal("write past the end accepted")
	}
}

func TestCrashStates(t *testing.T) {
	m := New(1<<20, 512)
	m.WriteAt([]byte("base"), 0)
	m.ResetLog()
	// Group 1: two unsynced writes; group 2: one two-sector write.
	m.WriteAt([]byte("AAAA"), 0)
	m.WriteAt([]byte("BBBB"), 4096)
	m.Sync()
	two := make([]byte, 1024)
	for i := range two {
		two[i] = 'C'
	}
	m.WriteAt(two, 8192)
	m.Sync()

	seen := map[string]bool{}
	for _, s := range m.CrashStates() {
		key := content(t, s.Disk, 0, 4) + "|" + content(t, s.Disk, 4096, 4) + "|" +
			content(t, s.Disk, 8192, 1)[:1] + content(t, s.Disk, 8192+1023, 1)
		seen[key] = true
	}
	for _, want := range []string{
		"base|\x00\x00\x00\x00|\x00\x00", // nothing durable
		"AAAA|\x00\x00\x00\x00|\x00\x00", // first write only
		"base|BBBB|\x00\x00",             // second write only: reordered
		"AAAA|BBBB|\x00\x00",             // group 1 durable
		"AAAA|BBBB|C\x00",                // group 2 torn: first sector
		"AAAA|BBBB|\x00C",                // group 2 torn: last sector
		"AAAA|BBBB|CC",                   // everything
	} {
		if !seen[want] {
			t.Errorf("missing crash state %q", want)
		}
	}
	if seen["AAAA|\x00\x00\x00\x00|CC"] {
		t.Error("group 2 durable without group 1: syncs are not respected")
	}
	last := m.CrashStates()
	if !last[len(last)-1].Disk.Equal(m) {
		t.Error("the last crash state is not the final disk")
	}
}
