package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

type entry struct {
	name, link, body string
	typ              byte
	mode             int64
	uid, gid         int
}

func makeTar(t *testing.T, ents ...entry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid, Size: int64(len(e.body))}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if h.Typeflag == tar.TypeChar {
			h.Devmajor, h.Devminor = 1, 3
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return b.Bytes()
}

func TestExtractTar(t *testing.T) {
	dir := t.TempDir()
	data := makeTar(t,
		entry{name: "./", typ: tar.TypeDir, mode: 0o755},
		entry{name: "etc/", typ: tar.TypeDir, mode: 0o555}, // read-only, yet filled below
		entry{name: "etc/hostname", body: "host\n"},
		entry{name: "usr/bin/tool", body: "#!/bin/sh\n", mode: 0o4755},
		entry{name: "bin", typ: tar.TypeSymlink, link: "usr/bin"},
		entry{name: "usr/bin/env", typ: tar.TypeSymlink, link: "/usr/bin/tool"}, // absolute: resolves in the image
		entry{name: "etc/hostname.bak", typ: tar.TypeLink, link: "etc/hostname"},
		entry{name: "run/fifo", typ: tar.TypeFifo, mode: 0o600},
		entry{name: "etc/hostname", body: "replaced\n"}, // a later entry replaces
	)
	st, err := ExtractTar(context.Background(), bytes.NewReader(data), dir, TarOptions{AsRoot: false})
	if err != nil {
		t.Fatal(err)
	}
	if !st.AllRoot || st.Entries != 9 {
		t.Errorf("stats %+v", st)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "etc/hostname")); string(b) != "replaced\n" {
		t.Errorf("hostname %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "etc/hostname.bak")); string(b) != "host\n" {
		t.Errorf("hard link %q", b)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "usr/bin/env")); l != "/usr/bin/tool" {
		t.Errorf("symlink %q", l)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "usr/bin/tool")); fi.Mode()&os.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("tool mode %v", fi.Mode())
	}
	if fi, _ := os.Stat(filepath.Join(dir, "etc")); fi.Mode().Perm() != 0o555 {
		t.Errorf("etc mode %v", fi.Mode())
	}
	if fi, _ := os.Lstat(filepath.Join(dir, "run/fifo")); fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("fifo mode %v", fi.Mode())
	}
	os.Chmod(filepath.Join(dir, "etc"), 0o755) // so the test can clean up as non-root
}

// TestHostileTar: every way a tarball could write outside the staging
// directory, or make what only root may, is refused with the entry named;
// nothing is written outside.
func TestHostileTar(t *testing.T) {
	for _, c := range []struct {
		name   string
		ents   []entry
		asRoot bool
		want   error
	}{
		{"absolute path", []entry{{name: "/etc/passwd", body: "x"}}, true, ErrUnsafeTar},
		{"dot-dot", []entry{{name: "a/../../outside", body: "x"}}, true, ErrUnsafeTar},
		{"dot-dot at the start", []entry{{name: "../outside", body: "x"}}, true, ErrUnsafeTar},
		{"through an absolute symlink", []entry{{name: "esc", typ: tar.TypeSymlink, link: "OUTSIDE"}, {name: "esc/file", body: "x"}}, true, ErrUnsafeTar},
		{"through a climbing symlink", []entry{{name: "up", typ: tar.TypeSymlink, link: "../.."}, {name: "up/file", body: "x"}}, true, ErrUnsafeTar},
		{"symlink then file of the same name", []entry{{name: "f", typ: tar.TypeSymlink, link: "OUTSIDE/victim"}, {name: "f", body: "x"}}, true, nil},
		{"hard link out", []entry{{name: "h", typ: tar.TypeLink, link: "../outside"}}, true, ErrUnsafeTar},
		{"hard link absolute", []entry{{name: "h", typ: tar.TypeLink, link: "/etc/passwd"}}, true, ErrUnsafeTar},
		{"hard link to nothing", []entry{{name: "h", typ: tar.TypeLink, link: "missing"}}, true, ErrUnsafeTar},
		{"hard link through a symlink out", []entry{{name: "esc", typ: tar.TypeSymlink, link: "OUTSIDE"}, {name: "h", typ: tar.TypeLink, link: "esc/victim"}}, true, ErrUnsafeTar},
		{"device node without root", []entry{{name: "dev/null", typ: tar.TypeChar, mode: 0o666}}, false, ErrNeedRoot},
		{"another owner without root", []entry{{name: "home/u/f", body: "x", uid: 1000, gid: 1000}}, false, ErrNeedRoot},
		{"a file replacing a directory", []entry{{name: "d/", typ: tar.TypeDir}, {name: "d/x", body: "1"}, {name: "d", body: "x"}}, true, ErrUnsafeTar},
		{"too many bytes", []entry{{name: "a", body: string(make([]byte, 600))}, {name: "b", body: string(make([]byte, 600))}}, true, ErrTooBig},
	} {
		t.Run(c.name, func(t *testing.T) {
			base := t.TempDir()
			outside := filepath.Join(base, "outside")
			os.Mkdir(outside, 0o755)
			os.WriteFile(filepath.Join(outside, "victim"), []byte("safe"), 0o644)
			dir := filepath.Join(base, "a", "b")
			os.MkdirAll(dir, 0o755)
			for i := range c.ents {
				if c.ents[i].link == "OUTSIDE" || c.ents[i].link == "OUTSIDE/victim" {
					c.ents[i].link = outside + c.ents[i].link[len("OUTSIDE"):]
				}
			}
			_, err := ExtractTar(context.Background(), bytes.NewReader(makeTar(t, c.ents...)), dir, TarOptions{AsRoot: c.asRoot, MaxBytes: 1000})
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			var te *TarError
			if c.want != nil && c.want != ErrTooBig && (!errors.As(err, &te) || te.Name == "") {
				t.Errorf("the error does not name the entry: %v", err)
			}
			if b, _ := os.ReadFile(filepath.Join(outside, "victim")); string(b) != "safe" {
				t.Errorf("a file outside was changed: %q", b)
			}
			ents, _ := os.ReadDir(outside)
			if len(ents) != 1 {
				t.Errorf("files appeared outside: %v", ents)
			}
			for _, p := range []string{filepath.Join(base, "outside", "file"), filepath.Join(base, "a", "file"), filepath.Join(base, "file")} {
				if _, err := os.Lstat(p); err == nil {
					t.Errorf("%s was written", p)
				}
			}
		})
	}
}

// TestHostileTarCancelled: extraction stops when its context ends.
func TestHostileTarCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := ExtractTar(ctx, bytes.NewReader(makeTar(t, entry{name: "a", body: "x"})), t.TempDir(), TarOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("%v", err)
	}
}

func TestExtractTarDeviceAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("making device nodes needs root")
	}
	dir := t.TempDir()
	data := makeTar(t, entry{name: "dev/null", typ: tar.TypeChar, mode: 0o666, uid: 0}, entry{name: "home/u/f", body: "x", uid: 1000, gid: 100})
	st, err := ExtractTar(context.Background(), bytes.NewReader(data), dir, TarOptions{AsRoot: true})
	if err != nil || st.AllRoot {
		t.Fatalf("%v %+v", err, st)
	}
	fi, err := os.Lstat(filepath.Join(dir, "dev/null"))
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("dev/null: %v %v", fi, err)
	}
	if fi, _ := os.Lstat(filepath.Join(dir, "home/u/f")); fi.Sys().(*syscall.Stat_t).Uid != 1000 {
		t.Errorf("owner not kept")
	}
}
