package dm

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

const verityTable = "0 2097152 verity 1 PARTUUID=a/PARTNROFF=1 PARTUUID=a/PARTNROFF=2 4096 4096 262144 1 sha256 " +
	"5f0a7a3d 6a2d 2 restart_on_corruption ignore_zero_blocks"

func TestParseCreate(t *testing.T) {
	devs, err := ParseCreate("root,,,ro," + verityTable)
	if err != nil {
		t.Fatal(err)
	}
	want := Device{Name: "root", Minor: -1, ReadOnly: true, Targets: []Target{{Start: 0, Length: 2097152, Type: "verity",
		Params: "1 PARTUUID=a/PARTNROFF=1 PARTUUID=a/PARTNROFF=2 4096 4096 262144 1 sha256 5f0a7a3d 6a2d 2 restart_on_corruption ignore_zero_blocks"}}}
	if len(devs) != 1 || devs[0].Name != want.Name || devs[0].Minor != -1 || !devs[0].ReadOnly || len(devs[0].Targets) != 1 || devs[0].Targets[0] != want.Targets[0] {
		t.Fatalf("got %+v, want %+v", devs, want)
	}
	if got := devs[0].Targets[0].String(); got != verityTable {
		t.Errorf("String() = %q", got)
	}
	// The kernel documentation's examples: two devices, two tables each
	// way, uuid and minor given, spaces around fields.
	devs, err = ParseCreate("lroot,,,rw, 0 4096 linear 98:16 0, 4096 4096 linear 98:32 0;" +
		" vroot,4a5e,7,ro,0 1740800 verity 254:0 254:0 1 4096 4096 217600 217600 sha1 76e9be054 f6d5fa9a")
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2 || len(devs[0].Targets) != 2 || devs[0].ReadOnly || devs[0].Targets[1].Start != 4096 ||
		devs[1].Name != "vroot" || devs[1].UUID != "4a5e" || devs[1].Minor != 7 || !devs[1].ReadOnly {
		t.Fatalf("got %+v", devs)
	}
	for name, bad := range map[string]string{
		"empty":            "",
		"too few fields":   "root,,,ro",
		"bad flags":        "root,,,rx," + verityTable,
		"bad minor":        "root,,x,ro," + verityTable,
		"negative minor":   "root,,-1,ro," + verityTable,
		"no name":          ",,,ro," + verityTable,
		"slash in name":    "a/b,,,ro," + verityTable,
		"dot-dot name":     "..,,,ro," + verityTable,
		"long name":        strings.Repeat("n", 128) + ",,,ro," + verityTable,
		"short table":      "root,,,ro,0 8",
		"zero length":      "root,,,ro,0 0 zero",
		"bad start":        "root,,,ro,x 8 zero",
		"long type":        "root,,,ro,0 8 " + strings.Repeat("t", 16),
		"empty device":     "root,,,ro,0 8 zero;",
		"empty table":      "root,,,ro,0 8 zero,",
		"unquoted in half": "root,,,ro,0",
		"NUL in params":    "root,,,ro,0 1 zero \x00",
	} {
		if _, err := ParseCreate(bad); !errors.Is(err, ErrCreateParam) {
			t.Errorf("%s: %q: %v", name, bad, err)
		}
	}
	if _, err := ParseCreate(strings.Repeat("d,,,ro,0 8 zero;", MaxDevices) + "d,,,ro,0 8 zero"); !errors.Is(err, ErrCreateParam) {
		t.Errorf("more than %d devices: %v", MaxDevices, err)
	}
}

func TestIoctlNumbers(t *testing.T) {
	// The values from <linux/dm-ioctl.h> on Linux (x86_64, arm64).
	for cmd, want := range map[uint]uint{cmdVersion: 0xc138fd00, cmdDevCreate: 0xc138fd03, cmdDevRemove: 0xc138fd04,
		cmdDevSuspend: 0xc138fd06, cmdTableLoad: 0xc138fd09, cmdTableStatus: 0xc138fd0c} {
		if got := ioctlNumber(cmd); got != want {
			t.Errorf("%s: %#x, want %#x", cmdNames[cmd], got, want)
		}
	}
}

func TestHeaderLayout(t *testing.T) {
	h := &header{Name: "root", UUID: "CRYPT-VERITY-x", Flags: flagReadOnly, TargetCount: 2, Dev: 0xfe00}
	b := h.encode([]byte("payload"), 1024)
	if len(b) != 1024 || binary.LittleEndian.Uint32(b[12:]) != 1024 || binary.LittleEndian.Uint32(b[16:]) != headerSize {
		t.Fatalf("size fields: len %d data_size %d data_start %d", len(b), binary.LittleEndian.Uint32(b[12:]), binary.LittleEndian.Uint32(b[16:]))
	}
	if string(b[headerSize:headerSize+7]) != "payload" {
		t.Error("data is not at data_start")
	}
	got, err := decodeHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != [3]uint32{4, 0, 0} || got.Name != "root" || got.UUID != h.UUID || got.Flags != flagReadOnly || got.TargetCount != 2 || got.Dev != 0xfe00 {
		t.Errorf("decoded %+v", got)
	}
	// A name of the longest length keeps its terminating NUL.
	long := &header{Name: strings.Repeat("n", 200)}
	if got, _ := decodeHeader(long.encode(nil, 0)); len(got.Name) != nameLen-1 {
		t.Errorf("a long name decoded to %d bytes", len(got.Name))
	}
	if _, err := decodeHeader(make([]byte, headerSize-1)); !errors.Is(err, ErrReply) {
		t.Errorf("a short reply: %v", err)
	}
}

// reply builds a DM_TABLE_STATUS reply as the kernel does: specs after the
// header, each next relative to the first spec.
func reply(ts []Status) []byte {
	var data []byte
	for _, t := range ts {
		n := (specSize + len(t.Info) + 1 + 7) &^ 7
		s := make([]byte, n)
		binary.LittleEndian.PutUint64(s[0:], t.Start)
		binary.LittleEndian.PutUint64(s[8:], t.Length)
		copy(s[24:], t.Type)
		copy(s[specSize:], t.Info)
		data = append(data, s...)
		binary.LittleEndian.PutUint32(s[20:], uint32(len(data)))
		copy(data[len(data)-n:], s)
	}
	h := &header{TargetCount: uint32(len(ts))}
	b := h.encode(data, 0)
	return b
}

func TestDecodeTargets(t *testing.T) {
	want := []Status{{Target: Target{Start: 0, Length: 2097152, Type: "verity"}, Info: "1 253:2 253:3 4096 4096 262144 1 sha256 ab cd"},
		{Target: Target{Start: 2097152, Length: 8, Type: "zero"}, Info: ""}}
	b := reply(want)
	h, _ := decodeHeader(b)
	got, err := decodeTargets(b, h)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	// The specs DM_TABLE_LOAD sends decode the same way for one target
	// (next is relative to the spec itself there, the same for the first).
	specs, err := encodeTargets([]Target{want[0].Target})
	if err != nil {
		t.Fatal(err)
	}
	if binary.LittleEndian.Uint32(specs[20:]) != uint32(len(specs)) || len(specs)%8 != 0 {
		t.Errorf("spec next %d, length %d", binary.LittleEndian.Uint32(specs[20:]), len(specs))
	}
	if _, err := encodeTargets([]Target{{Type: strings.Repeat("t", 16), Length: 1}}); err == nil {
		t.Error("a target type of 16 bytes was encoded")
	}
	if _, err := encodeTargets([]Target{{Type: "zero", Length: 1, Params: "a\x00b"}}); err == nil {
		t.Error("parameters holding a NUL were encoded")
	}

	// Lies: a count past the data, a next offset going backwards, no NUL.
	lie := func(name string, edit func(b []byte)) {
		b := reply(want)
		edit(b)
		h, err := decodeHeader(b)
		if err == nil {
			_, err = decodeTargets(b, h)
		}
		if !errors.Is(err, ErrReply) {
			t.Errorf("%s: %v", name, err)
		}
	}
	lie("count", func(b []byte) { binary.LittleEndian.PutUint32(b[20:], 3) })
	lie("huge count", func(b []byte) { binary.LittleEndian.PutUint32(b[20:], 1<<31) })
	lie("next backwards", func(b []byte) { binary.LittleEndian.PutUint32(b[headerSize+20:], 0) })
	lie("data size", func(b []byte) { binary.LittleEndian.PutUint32(b[12:], uint32(len(b)+1)) })
	lie("data start", func(b []byte) { binary.LittleEndian.PutUint32(b[16:], 8) })
	lie("no NUL", func(b []byte) {
		for i := headerSize + specSize; i < len(b); i++ {
			b[i] = 'x'
		}
	})
}

func FuzzParseCreate(f *testing.F) {
	f.Add("root,,,ro," + verityTable)
	f.Add("a,u,1,rw,0 8 zero,8 8 zero;b,,,ro,0 1 error")
	f.Fuzz(func(t *testing.T, s string) {
		devs, err := ParseCreate(s)
		if err != nil {
			if !errors.Is(err, ErrCreateParam) {
				t.Fatalf("%v does not match ErrCreateParam", err)
			}
			return
		}
		for _, d := range devs {
			if len(d.Targets) == 0 {
				t.Fatal("a device without a table")
			}
			if _, err := encodeTargets(d.Targets); err != nil {
				t.Fatalf("a parsed table does not encode: %v", err)
			}
			for _, tg := range d.Targets {
				back, err := ParseTarget(tg.String())
				if err != nil || back != tg {
					t.Fatalf("target %q round trip: %+v, %v", tg.String(), back, err)
				}
			}
		}
	})
}

func FuzzDecodeTargets(f *testing.F) {
	f.Add(reply([]Status{{Target: Target{Length: 8, Type: "zero"}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, err := decodeHeader(b); err == nil {
			decodeTargets(b, h)
		}
	})
}
