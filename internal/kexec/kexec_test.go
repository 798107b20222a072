package kexec

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckCmdline(t *testing.T) {
	ok := "root=/dev/dm-0 ro dm-mod.create=\"root,,,ro,0 8 verity 1 PARTUUID=x/PARTNROFF=1\" console=ttyS0"
	if err := CheckCmdline(ok); err != nil {
		t.Fatal(err)
	}
	if err := CheckCmdline(strings.Repeat("x", MaxCmdline-1)); err != nil {
		t.Errorf("the longest command line: %v", err)
	}
	for name, s := range map[string]string{
		"too long":   strings.Repeat("x", MaxCmdline),
		"NUL":        "root=/dev/dm-0\x00 dm-mod.create=...",
		"line break": "root=/dev/dm-0\ninit=/bin/sh",
	} {
		if err := CheckCmdline(s); !errors.Is(err, ErrCmdline) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
