package initramfs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/updog/updog/internal/testutil"
)

type member struct {
	name, data, link string
	mode             uint32
	major, minor     uint32
}

func readAll(t *testing.T, b []byte) []member {
	t.Helper()
	r := NewReader(bytes.NewReader(b))
	var out []member
	for {
		e, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		if e.UID != 0 || e.GID != 0 || e.Mtime != 42 {
			t.Errorf("%s: uid %d gid %d mtime %d", e.Name, e.UID, e.GID, e.Mtime)
		}
		out = append(out, member{name: e.Name, data: string(data), link: e.LinkTarget, mode: e.Mode, major: e.RdevMajor, minor: e.RdevMinor})
	}
}

func TestWriterRoundTrip(t *testing.T) {
	var b bytes.Buffer
	w := NewWriter(&b, 42)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.Dir("/dev", 0o755))
	must(w.CharDev("dev/console", 0o600, 5, 1))
	must(w.File("./bin/init", 0o755, strings.NewReader("hello"), 5))
	must(w.File("lib/modules/6.1/a.ko", 0o644, strings.NewReader("abcd"), 4))
	must(w.File("empty", 0o644, strings.NewReader(""), 0))
	must(w.Symlink("sbin/init", "/bin/init"))
	must(w.Close())
	if b.Len()%4 != 0 {
		t.Errorf("archive of %d bytes is not 4-byte aligned", b.Len())
	}
	got := readAll(t, b.Bytes())
	want := []member{
		{name: "dev", mode: 0o40755},
		{name: "dev/console", mode: 0o20600, major: 5, minor: 1},
		{name: "bin", mode: 0o40755},
		{name: "bin/init", mode: 0o100755, data: "hello"},
		{name: "lib", mode: 0o40755},
		{name: "lib/modules", mode: 0o40755},
		{name: "lib/modules/6.1", mode: 0o40755},
		{name: "lib/modules/6.1/a.ko", mode: 0o100644, data: "abcd"},
		{name: "empty", mode: 0o100644},
		{name: "sbin", mode: 0o40755},
		{name: "sbin/init", mode: 0o120777, data: "", link: "/bin/init"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("read back:\n%+v\nwant\n%+v", got, want)
	}
	if err := w.Dir("late", 0o755); !errors.Is(err, ErrClosed) {
		t.Errorf("Dir after Close: %v", err)
	}
	if err := w.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}

// TestWriterMatchesCpio lists and extracts our archive with GNU cpio.
func TestWriterMatchesCpio(t *testing.T) {
	cpio := testutil.Tool(t, "cpio")
	var b bytes.Buffer
	w := NewWriter(&b, 42)
	for i, n := range []string{"a/b/c.txt", "a/d", "odd name with spaces", "x/yy/zzz/wwww"} {
		data := strings.Repeat("x", i*3+1)
		if err := w.File(n, 0o640, strings.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Symlink("a/link", "b/c.txt"); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command(cpio, "-idm", "--quiet", "--no-absolute-filenames")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(b.Bytes())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	for i, n := range []string{"a/b/c.txt", "a/d", "odd name with spaces", "x/yy/zzz/wwww"} {
		got, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil || string(got) != strings.Repeat("x", i*3+1) {
			t.Errorf("%s: %q, %v", n, got, err)
		}
		if st, err := os.Stat(filepath.Join(dir, n)); err != nil || st.Mode().Perm() != 0o640 {
			t.Errorf("%s: mode %v, %v", n, st.Mode(), err)
		}
	}
	if l, err := os.Readlink(filepath.Join(dir, "a/link")); err != nil || l != "b/c.txt" {
		t.Errorf("link: %q, %v", l, err)
	}
}

func TestWriterRefuses(t *testing.T) {
	for _, n := range []string{"", "/", ".", "a/../../b", "..", "a/..", "nul\x00"} {
		w := NewWriter(io.Discard, 0)
		if err := w.File(n, 0o644, strings.NewReader("x"), 1); !errors.Is(err, ErrName) {
			t.Errorf("File(%q): %v", n, err)
		}
	}
	// A reader shorter than promised breaks the archive for good.
	w := NewWriter(io.Discard, 0)
	if err := w.File("short", 0o644, strings.NewReader("ab"), 3); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short file: %v", err)
	}
	if err := w.Dir("next", 0o755); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("after a failed write: %v (want the sticky error)", err)
	}
	if err := w.Close(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("Close after a failed write: %v", err)
	}
}

func FuzzReader(f *testing.F) {
	var b bytes.Buffer
	w := NewWriter(&b, 42)
	w.File("a/b", 0o644, strings.NewReader("data"), 4)
	w.Symlink("l", "a/b")
	w.Close()
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		for i := 0; i < 1000; i++ {
			if _, err := r.Next(); err != nil {
				return
			}
			io.Copy(io.Discard, r)
		}
	})
}

// elfWithModinfo returns a minimal ELF64 relocatable file holding a
// .modinfo section with the given key=value strings.
func elfWithModinfo(kv ...string) []byte {
	var modinfo []byte
	for _, s := range kv {
		modinfo = append(append(modinfo, s...), 0)
	}
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	le := binary.LittleEndian
	hdr := make([]byte, 64)
	copy(hdr, "\x7fELF")
	hdr[4], hdr[5], hdr[6] = 2, 1, 1 // 64-bit, little-endian, version 1
	le.PutUint16(hdr[16:], 1)        // ET_REL
	le.PutUint16(hdr[18:], 62)       // EM_X86_64
	le.PutUint32(hdr[20:], 1)
	modOff := uint64(64)
	strOff := modOff + uint64(len(modinfo))
	shOff := (strOff + uint64(len(shstr)) + 7) &^ 7
	le.PutUint64(hdr[40:], shOff)
	le.PutUint16(hdr[52:], 64) // e_ehsize
	le.PutUint16(hdr[58:], 64) // e_shentsize
	le.PutUint16(hdr[60:], 3)  // e_shnum
	le.PutUint16(hdr[62:], 2)  // e_shstrndx
	out := append(hdr, modinfo...)
	out = append(out, shstr...)
	out = append(out, make([]byte, int(shOff)-len(out))...)
	sh := func(name uint32, typ uint32, off, size uint64) {
		s := make([]byte, 64)
		le.PutUint32(s[0:], name)
		le.PutUint32(s[4:], typ)
		le.PutUint64(s[24:], off)
		le.PutUint64(s[32:], size)
		le.PutUint64(s[48:], 1)
		out = append(out, s...)
	}
	sh(0, 0, 0, 0)
	sh(1, 1, modOff, uint64(len(modinfo))) // .modinfo, PROGBITS
	sh(10, 3, strOff, uint64(len(shstr)))  // .shstrtab, STRTAB
	return out
}

func fakeModules(t *testing.T, mods map[string][]string, builtin ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "6.1.0-test")
	for path, kv := range mods {
		p := filepath.Join(dir, "kernel", path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, elfWithModinfo(kv...), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var b strings.Builder
	for _, m := range builtin {
		b.WriteString("kernel/" + m + "\n")
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestResolveModules(t *testing.T) {
	dir := fakeModules(t, map[string][]string{
		"md/dm-verity.ko":          {"depends=reed_solomon,dm-mod,dm-bufio", "name=dm_verity"},
		"md/dm-bufio.ko":           {"depends=dm-mod"},
		"md/dm-mod.ko":             {"depends="},
		"lib/reed_solomon.ko":      {"depends="},
		"fs/ext4.ko":               {"softdep=pre: crypto-crc32c", "depends=jbd2,crc16"},
		"fs/jbd2.ko":               {"softdep=pre: crypto-crc32c", "depends="},
		"crypto/crc32c_generic.ko": {"alias=crypto-crc32c", "depends="},
		"x86/crc32c-intel.ko":      {"alias=crypto-crc32c", "depends="},
		"unrelated.ko":             {"alias=crypto-other"},
	}, "lib/crc16.ko")
	mods, err := ResolveModules(dir, []string{"dm-verity", "ext4"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	pos := map[string]int{}
	for i, m := range mods {
		s := m.Name
		if m.Optional {
			s += "?"
		}
		got = append(got, s)
		pos[m.Name] = i
		if _, err := os.Stat(filepath.Join(dir, m.Path)); err != nil {
			t.Errorf("%s: path %s: %v", m.Name, m.Path, err)
		}
	}
	want := []string{"reed_solomon", "dm_mod", "dm_bufio", "dm_verity", "crc32c_generic?", "crc32c_intel?", "jbd2", "ext4"}
	if !slices.Equal(got, want) {
		t.Fatalf("modules %v, want %v", got, want)
	}
	for _, dep := range [][2]string{{"dm_mod", "dm_bufio"}, {"dm_bufio", "dm_verity"}, {"crc32c_generic", "jbd2"}, {"jbd2", "ext4"}} {
		if pos[dep[0]] > pos[dep[1]] {
			t.Errorf("%s is loaded after %s, which needs it", dep[0], dep[1])
		}
	}
	list := ModuleList("lib/modules/6.1.0-test", mods)
	entries, err := ParseModuleList(list)
	if err != nil || len(entries) != len(mods) || !entries[4].Optional || entries[0].Optional ||
		entries[0].Path != "lib/modules/6.1.0-test/kernel/lib/reed_solomon.ko" {
		t.Fatalf("module list %q: %+v, %v", list, entries, err)
	}

	if _, err := ResolveModules(dir, []string{"nosuch"}); !errors.Is(err, ErrModule) {
		t.Errorf("a missing module: %v", err)
	}
	broken := fakeModules(t, map[string][]string{"a.ko": {"depends=b"}})
	if _, err := ResolveModules(broken, []string{"a"}); !errors.Is(err, ErrModule) || !strings.Contains(err.Error(), "needed by a") {
		t.Errorf("a missing dependency: %v", err)
	}
	cycle := fakeModules(t, map[string][]string{"a.ko": {"depends=b"}, "b.ko": {"depends=a"}})
	if _, err := ResolveModules(cycle, []string{"a"}); !errors.Is(err, ErrModule) {
		t.Errorf("a cycle: %v", err)
	}
	if err := os.WriteFile(filepath.Join(broken, "kernel", "bad.ko"), []byte("not ELF"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ResolveModules(broken, []string{"bad"}); !errors.Is(err, ErrModule) {
		t.Errorf("a module that is not ELF: %v", err)
	}
}

func TestParseModuleListRefuses(t *testing.T) {
	for _, l := range []string{"../x.ko", "/lib/x.ko", "a/../../x.ko", "x.ko maybe", "x.ko optional extra"} {
		if _, err := ParseModuleList([]byte(l + "\n")); !errors.Is(err, ErrModule) {
			t.Errorf("%q: %v", l, err)
		}
	}
	if _, err := ParseModuleList(bytes.Repeat([]byte("#\n"), MaxModuleList)); !errors.Is(err, ErrModule) {
		t.Error("an oversized list was accepted")
	}
}

func TestWriteReproducible(t *testing.T) {
	dir := fakeModules(t, map[string][]string{"md/dm-mod.ko": {"depends="}, "md/dm-bufio.ko": {"depends=dm-mod"}})
	init := filepath.Join(t.TempDir(), "bootsel")
	if err := os.WriteFile(init, []byte("#!binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	extra := filepath.Join(t.TempDir(), "x.conf")
	os.WriteFile(extra, []byte("x=1\n"), 0o600)
	spec := Spec{Init: init, ModulesDir: dir, Modules: []string{"dm_bufio"}, Files: map[string]string{"etc/x.conf": extra}, Mtime: 42}
	var a, b bytes.Buffer
	mods, err := Write(&a, spec)
	if err != nil || len(mods) != 2 {
		t.Fatalf("Write: %v, %v", mods, err)
	}
	os.Chtimes(init, time.Unix(1, 0), time.Unix(1, 0))
	if _, err := Write(&b, spec); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("two writes of the same Spec differ")
	}
	byName := map[string]member{}
	for _, m := range readAll(t, a.Bytes()) {
		byName[m.name] = m
	}
	if m := byName["init"]; m.data != "#!binary" || m.mode != 0o100755 {
		t.Errorf("init: %+v", m)
	}
	if m := byName["dev/console"]; m.mode != 0o20600 || m.major != 5 || m.minor != 1 {
		t.Errorf("dev/console: %+v", m)
	}
	if m := byName[ModuleListName]; !strings.Contains(m.data, "lib/modules/6.1.0-test/kernel/md/dm-mod.ko\nlib/modules/6.1.0-test/kernel/md/dm-bufio.ko\n") {
		t.Errorf("module list %q", m.data)
	}
	if m := byName["lib/modules/6.1.0-test/kernel/md/dm-bufio.ko"]; m.data == "" {
		t.Error("dm-bufio.ko is not carried")
	}
	if m := byName["etc/x.conf"]; m.data != "x=1\n" || m.mode != 0o100644 {
		t.Errorf("etc/x.conf: %+v", m)
	}
}

// TestHostileInitIsFIFO: a FIFO given as the init program is refused at
// once, never read (which would block).
func TestHostileInitIsFIFO(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "init")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skip("mkfifo:", err)
	}
	if _, err := Write(io.Discard, Spec{Init: fifo}); err == nil {
		t.Fatal("a FIFO was accepted as /init")
	}
}
