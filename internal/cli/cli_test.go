package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestReport(t *testing.T) {
	for _, c := range []struct {
		err  error
		code int
		out  string
	}{
		{nil, 0, ""},
		{ErrHelp, 0, ""},
		{Usagef("bad flag"), 2, "prog: bad flag\n"},
		{errors.New("boom"), 1, "prog: cmd: boom\n"},
		{&ExitError{Code: 3, Err: errors.New("corrupt")}, 3, "prog: cmd: corrupt\n"},
		{&ExitError{Code: 4, Err: errors.New("quiet"), Quiet: true}, 4, ""},
	} {
		var b bytes.Buffer
		if code := Report("prog", "cmd", c.err, &b); code != c.code || b.String() != c.out {
			t.Errorf("%v: %d %q, want %d %q", c.err, code, b.String(), c.code, c.out)
		}
	}
}

func TestFlags(t *testing.T) {
	var out bytes.Buffer
	fs, parse := Flags("prog", "sub", "ARG", &out)
	n := fs.Int("n", 1, "a number")
	if err := parse([]string{"--n", "5", "x"}, 1); err != nil || *n != 5 {
		t.Fatalf("%v %d", err, *n)
	}
	_, parse = Flags("prog", "sub", "ARG", &out)
	if err := parse([]string{"--help"}, 1); !errors.Is(err, ErrHelp) || !strings.Contains(out.String(), "Usage: prog sub ARG") {
		t.Fatalf("help: %v %q", err, out.String())
	}
	_, parse = Flags("prog", "sub", "ARG", &out)
	var ue *UsageError
	if err := parse([]string{"a", "b"}, 1); !errors.As(err, &ue) {
		t.Fatalf("two args: %v", err)
	}
	_, parse = Flags("prog", "sub", "ARG", &out)
	if err := parse([]string{"--nope"}, -1); !errors.As(err, &ue) {
		t.Fatalf("unknown flag: %v", err)
	}
}

func TestProgress(t *testing.T) {
	var nilP *Progress
	nilP.Start("x", 1) // a nil Progress is a no-op
	nilP.Add(1)
	nilP.Finish()
	var b bytes.Buffer
	p := &Progress{w: &b}
	p.Start("root.img", 4<<20)
	p.Add(1 << 20)
	if !strings.Contains(b.String(), "root.img   25% 1 MiB / 4 MiB") {
		t.Errorf("progress line %q", b.String())
	}
	p.Finish()
	if !strings.HasSuffix(b.String(), "\r\033[K") {
		t.Error("Finish did not erase the line")
	}
}
