package main

import (
	"slices"
	"testing"
	"time"
)

func TestParseCmdline(t *testing.T) {
	got := parseCmdline(`  root=/dev/dm-0 rootwait ro dm-mod.create="root,,,ro,0 8 verity 1 PARTUUID=x/PARTNROFF=1 a b" ` +
		`"quoted=a b" console=ttyS0,115200 empty= x=y=z -- init args=1`)
	want := []param{
		{"root", "/dev/dm-0", true}, {"rootwait", "", false}, {"ro", "", false},
		{"dm-mod.create", "root,,,ro,0 8 verity 1 PARTUUID=x/PARTNROFF=1 a b", true},
		{"quoted", "a b", true}, {"console", "ttyS0,115200", true}, {"empty", "", true}, {"x", "y=z", true},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	// An unquoted dm-mod.create= is cut at the first space, as the kernel
	// cuts it: the table is lost.
	c := newCmdline("dm-mod.create=root,,,ro,0 8 verity root=/dev/dm-0 root=/dev/dm-1")
	if v, _ := c.get("dm-mod.create"); v != "root,,,ro,0" {
		t.Errorf("unquoted: %q", v)
	}
	if v, _ := c.get("root"); v != "/dev/dm-1" {
		t.Errorf("the last root= should win: %q", v)
	}
	if !c.has("8") || c.has("rootwait") {
		t.Error("has")
	}
}

func TestTimeoutParam(t *testing.T) {
	if d, err := newCmdline("").timeout(); err != nil || d != DefaultTimeout {
		t.Errorf("default: %v, %v", d, err)
	}
	if d, err := newCmdline("bootsel.timeout=5s").timeout(); err != nil || d != 5*time.Second {
		t.Errorf("5s: %v, %v", d, err)
	}
	for _, bad := range []string{"bootsel.timeout=x", "bootsel.timeout=-1s", "bootsel.timeout=0", "bootsel.timeout=2h"} {
		if _, err := newCmdline(bad).timeout(); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}
