package bootconf

import (
	"errors"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	c := Config{Format: 1, Name: "updog", Variant: "v", Arch: "x86_64", Version: "1.2.3", Kernel: "vmlinuz",
		RootFS: "ext4", RootHash: "ab", Salt: "-", Cmdline: "root=/dev/dm-0 x=" + PartRef(1)}
	for _, initrd := range []string{"", "initrd.img"} {
		c.Initrd = initrd
		b, err := c.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		got, err := Parse(b)
		if err != nil {
			t.Fatalf("%v\n%s", err, b)
		}
		if *got != c {
			t.Fatalf("round trip: %+v, want %+v", *got, c)
		}
		if cl := got.KernelCmdline("1234"); cl != "root=/dev/dm-0 x=PARTUUID=1234/PARTNROFF=1" {
			t.Errorf("cmdline %q", cl)
		}
	}
	c.Cmdline = "a\nformat=2"
	if _, err := c.MarshalText(); !errors.Is(err, ErrInvalid) {
		t.Errorf("a line break in a value: %v", err)
	}
}

func TestParseRefuses(t *testing.T) {
	good := "format=1\nname=n\nvariant=v\narch=a\nversion=1.0.0\nkernel=vmlinuz\nroot_fs=ext4\nroot_hash=ab\nsalt=-\ncmdline=x\n"
	if _, err := Parse([]byte(good)); err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{
		"no format":            strings.Replace(good, "format=1\n", "", 1),
		"format 2":             strings.Replace(good, "format=1", "format=2", 1),
		"unknown key":          good + "colour=blue\n",
		"twice":                good + "kernel=other\n",
		"no cmdline":           strings.Replace(good, "cmdline=x\n", "", 1),
		"no equals":            good + "oops\n",
		"absolute path":        strings.Replace(good, "kernel=vmlinuz", "kernel=/etc/shadow", 1),
		"climbing path":        strings.Replace(good, "kernel=vmlinuz", "kernel=a/../../x", 1),
		"climbing initrd":      good + "initrd=../initrd\n",
		"NUL in a value":       strings.Replace(good, "root_fs=ext4", "root_fs=ext4\x00x", 1),
		"CR in a value":        strings.Replace(good, "cmdline=x", "cmdline=x\ry", 1),
		"too long":             good + "#" + strings.Repeat("x", MaxSize),
		"line longer than max": "format=1\ncmdline=" + strings.Repeat("x", MaxSize-20) + "\n",
	} {
		if _, err := Parse([]byte(text)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestPartRef(t *testing.T) {
	const g = "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0"
	if got := PartRef(2); got != "PARTUUID=$boot_uuid/PARTNROFF=2" {
		t.Fatalf("PartRef(2) = %q", got)
	}
	c := Config{Cmdline: PartRef(1)}
	uuid, off, err := ParsePartRef(c.KernelCmdline(g))
	if err != nil || uuid != strings.ToLower(g) || off != 1 {
		t.Fatalf("ParsePartRef = %q, %d, %v", uuid, off, err)
	}
	if uuid, off, err := ParsePartRef("PARTUUID=" + g); err != nil || uuid != strings.ToLower(g) || off != 0 {
		t.Fatalf("without PARTNROFF: %q, %d, %v", uuid, off, err)
	}
	for _, bad := range []string{
		"", "/dev/vda3", "PARTUUID=", "PARTUUID=$boot_uuid/PARTNROFF=1", "PARTUUID=" + g + "/", "PARTUUID=" + g + "/PARTNROFF=",
		"PARTUUID=" + g + "/PARTNROFF=x", "PARTUUID=" + g + "/PARTNROFF=+1", "PARTUUID=" + g + "/PARTNROFF=01",
		"PARTUUID=" + g + "/PARTNROFF=99999999999999999999", "PARTUUID=" + g + "/OTHER=1", "PARTUUID=" + g[:35] + "g",
		"PARTUUID=" + strings.ReplaceAll(g, "-", "x"),
	} {
		if _, _, err := ParsePartRef(bad); !errors.Is(err, ErrPartRef) {
			t.Errorf("ParsePartRef(%q): %v", bad, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	good, _ := Config{Format: 1, Name: "n", Variant: "v", Arch: "a", Version: "1", Kernel: "k", Initrd: "i",
		RootFS: "ext4", RootHash: "ab", Salt: "-", Cmdline: "c " + PartRef(1)}.MarshalText()
	f.Add(good)
	f.Add([]byte("format=1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not match ErrInvalid", err)
			}
			return
		}
		out, err := c.MarshalText()
		if err != nil {
			t.Fatalf("a parsed configuration does not marshal: %v", err)
		}
		c2, err := Parse(out)
		if err != nil || *c2 != *c {
			t.Fatalf("round trip: %+v, %v; want %+v", c2, err, c)
		}
	})
}
