package gptprio

import (
	"testing"

	"github.com/updog/updog/internal/disktest"
)

// fuzzDiskBytes is the size of the disk a fuzz input is laid on: the first
// and last 16 KiB of input land at the start and the end of the disk, where
// the two GPT copies live.
const fuzzDiskBytes = 256 << 10

func diskFromFuzz(data []byte, ss int) *disktest.Mem {
	d := disktest.New(fuzzDiskBytes, ss)
	half := min(len(data)/2, fuzzDiskBytes/2)
	d.WriteAt(data[:half], 0)
	tail := data[half:]
	if len(tail) > fuzzDiskBytes/2 {
		tail = tail[:fuzzDiskBytes/2]
	}
	d.WriteAt(tail, fuzzDiskBytes-int64(len(tail)))
	return d
}

func fuzzSeed(t testing.TB, ss int) []byte {
	d := disktest.New(fuzzDiskBytes, ss)
	tb, err := New(fuzzDiskBytes, ss, GUID{1})
	if err != nil {
		t.Fatal(err)
	}
	// Four entries fill one 512-byte sector: small inputs fuzz fast.
	tb.Partitions = tb.Partitions[:4]
	tb.FirstUsableLBA = 3
	tb.BackupEntriesLBA = tb.BackupLBA - 1
	tb.LastUsableLBA = tb.BackupEntriesLBA - 1
	tb.Partitions[0] = Partition{Number: 1, Type: TypeBoot, FirstLBA: tb.FirstUsableLBA, LastLBA: tb.FirstUsableLBA + 3,
		Attributes: prio(1, 0, true)}
	if err := Write(d, tb); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 3*ss)
	d.ReadAt(head, 0)
	tail := make([]byte, 2*ss)
	d.ReadAt(tail, fuzzDiskBytes-int64(len(tail)))
	return append(head, tail...)
}

// FuzzGPTRead: arbitrary bytes never panic the reader, and whatever it
// accepts survives Write and Read unchanged.
func FuzzGPTRead(f *testing.F) {
	f.Add(fuzzSeed(f, 512), false)
	f.Add(fuzzSeed(f, 4096), true)
	f.Add([]byte("EFI PART"), false)
	f.Fuzz(func(t *testing.T, data []byte, big bool) {
		ss := 512
		if big {
			ss = 4096
		}
		d := diskFromFuzz(data, ss)
		tb, err := Read(d)
		if err != nil {
			return
		}
		if err := Write(d, tb); err != nil {
			// Only an inconsistency Read itself tolerates may be refused,
			// and then nothing may have been written.
			if d.Writes() != 0 {
				t.Fatalf("Write failed after writing: %v", err)
			}
			return
		}
		again, err := Read(d)
		if err != nil {
			t.Fatalf("read after write: %v", err)
		}
		if !sameContent(tb, again) {
			t.Fatalf("round trip changed the table")
		}
		if again.RecoveredFromBackup || again.BackupStale {
			t.Fatalf("after a write, both copies should be sound: %+v", again)
		}
	})
}

// FuzzAttr: setting a gptprio field reads back, and no other bit moves.
func FuzzAttr(f *testing.F) {
	f.Add(uint64(0), 0, 0, false)
	f.Add(uint64(0x5555555555555555), 15, 1, true)
	f.Fuzz(func(t *testing.T, raw uint64, p, n int, ok bool) {
		p, n = p&0xf, n&0xf
		a := Attr(raw)
		b := a.WithPriority(p).WithTries(n).WithSuccessful(ok)
		if b.Priority() != p || b.Tries() != n || b.Successful() != ok {
			t.Fatalf("%v: set %d/%d/%v, read %v", a, p, n, ok, b)
		}
		const ours = uint64(0x1ff) << 48
		if uint64(a)&^ours != uint64(b)&^ours {
			t.Fatalf("other bits changed: %#x -> %#x", raw, uint64(b))
		}
		if c := b.WithBootEverSucceeded(true); !c.BootEverSucceeded() || uint64(c)&^(1<<57) != uint64(b)&^(1<<57) {
			t.Fatalf("bit 57: %#x -> %#x", uint64(b), uint64(c))
		}
	})
}
