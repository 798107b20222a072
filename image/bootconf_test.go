package image

import (
	"errors"
	"strings"
	"testing"
)

func TestBootConfigRoundTrip(t *testing.T) {
	c := BootConfig{Format: 1, Name: "updog", Variant: "v", Arch: "x86_64", Version: "1.2.3", Kernel: "vmlinuz",
		RootFS: "ext4", RootHash: "ab", Salt: "-", Cmdline: "root=/dev/dm-0 x=PARTUUID=$boot_uuid/PARTNROFF=1"}
	for _, initrd := range []string{"", "initrd.img"} {
		c.Initrd = initrd
		b, err := c.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseBootConfig(b)
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
	if _, err := c.MarshalText(); !errors.Is(err, ErrBootConfig) {
		t.Errorf("a line break in a value: %v", err)
	}
}

func TestParseBootConfigRefuses(t *testing.T) {
	good := "format=1\nname=n\nvariant=v\narch=a\nversion=1.0.0\nkernel=vmlinuz\nroot_fs=ext4\nroot_hash=ab\nsalt=-\ncmdline=x\n"
	if _, err := ParseBootConfig([]byte(good)); err != nil {
		t.Fatal(err)
	}
	for name, text := range map[string]string{
		"no format":     strings.Replace(good, "format=1\n", "", 1),
		"format 2":      strings.Replace(good, "format=1", "format=2", 1),
		"unknown key":   good + "colour=blue\n",
		"twice":         good + "kernel=other\n",
		"no cmdline":    strings.Replace(good, "cmdline=x\n", "", 1),
		"no equals":     good + "oops\n",
		"absolute path": strings.Replace(good, "kernel=vmlinuz", "kernel=/etc/shadow", 1),
		"climbing path": strings.Replace(good, "kernel=vmlinuz", "kernel=a/../../x", 1),
		"too long":      good + "#" + strings.Repeat("x", MaxBootConfig),
	} {
		if _, err := ParseBootConfig([]byte(text)); !errors.Is(err, ErrBootConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
