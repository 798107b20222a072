package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/updog/updog/internal/testutil"
)

func TestVerityCommands(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	os.WriteFile(data, buf, 0o644)
	hash := filepath.Join(dir, "hash")

	out, errs, code := ib("verity", "format", "--salt", "00ff", "--uuid", "11111111-2222-3333-4444-555555555555", "--json", data, hash)
	if code != 0 {
		t.Fatalf("format: %d %s", code, errs)
	}
	var info map[string]any
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"root_hash", "salt", "uuid", "hash", "data_block_size", "hash_block_size", "data_blocks",
		"hash_blocks", "superblock", "hash_offset", "hash_start", "dm_table", "dm_mod_create"} {
		if _, ok := info[k]; !ok {
			t.Errorf("format --json lacks %q", k)
		}
	}
	root := info["root_hash"].(string)
	if info["salt"] != "00ff" || info["data_blocks"].(float64) != 256 {
		t.Errorf("format --json: %v", info)
	}
	if out, _, _ := ib("verity", "format", "--salt", "00ff", data, filepath.Join(dir, "hash2")); strings.TrimSpace(out) != root {
		t.Errorf("plain format prints %q, want the root hash %s", out, root)
	}

	if _, errs, code := ib("verity", "verify", data, hash, root); code != 0 {
		t.Fatalf("verify: %d %s", code, errs)
	}
	buf[4096*9+1] ^= 1
	os.WriteFile(data, buf, 0o644)
	_, errs, code = ib("verity", "verify", data, hash, root)
	if code != exitCorrupt || !strings.Contains(errs, "data block 9") {
		t.Fatalf("corrupt data: exit %d, %q", code, errs)
	}
	if _, errs, code := ib("verity", "verify", data, hash, "abcd"); code != exitUsage {
		t.Errorf("short root hash: %d %s", code, errs)
	}
	out, _, code = ib("verity", "dump", hash)
	if code != 0 || !strings.Contains(out, "Data blocks:     \t256") || !strings.Contains(out, "Salt:            \t00ff") {
		t.Errorf("dump: %d %q", code, out)
	}
	if _, errs, code := ib("verity", "dump", data); code != exitError || !strings.Contains(errs, "signature") {
		t.Errorf("dump of a non-superblock: %d %q", code, errs)
	}
	for _, args := range [][]string{
		{"verity"}, {"verity", "nope"}, {"verity", "format", data},
		{"verity", "format", "--hash", "md5", data, hash}, {"verity", "format", "--salt", "zz", data, hash},
		{"verity", "format", "--salt", "00", "--no-salt", data, hash},
	} {
		if _, _, code := ib(args...); code != exitUsage {
			t.Errorf("%v: exit %d, want usage", args, code)
		}
	}
}

// verityHangLimit bounds commands that must fail at once: a command blocked on a
// FIFO fails its test instead of stalling the run.
const verityHangLimit = 30 * time.Second

// ibVerityGuarded runs imgbuild with ctx, failing the test if it has not returned
// within verityHangLimit.
func ibVerityGuarded(t *testing.T, ctx context.Context, args ...string) (string, string, int) {
	t.Helper()
	type result struct {
		out, errs string
		code      int
	}
	done := make(chan result, 1)
	go func() {
		var out, errb bytes.Buffer
		code := run(ctx, args, &out, &errb)
		done <- result{out.String(), errb.String(), code}
	}()
	select {
	case r := <-done:
		return r.out, r.errs, r.code
	case <-time.After(verityHangLimit):
		t.Fatalf("imgbuild %v did not return within %v: blocked", args, verityHangLimit)
	}
	return "", "", 0
}

func writeVerityPattern(t *testing.T, path string, size int) []byte {
	t.Helper()
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i*7 + i>>12)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHostileVerityHashOverlapsData gives format a HASH that is DATA under
// another name or at an offset inside it: each is refused, naming both
// paths, and DATA is left as it was.
func TestHostileVerityHashOverlapsData(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	orig := writeVerityPattern(t, data, 1<<20)
	symlink, hardlink := filepath.Join(dir, "symlink"), filepath.Join(dir, "hardlink")
	if err := os.Symlink(data, symlink); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(data, hardlink); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		args []string
	}{
		{"same path", []string{data, data}},
		{"symlink", []string{data, symlink}},
		{"symlink as data", []string{symlink, data}},
		{"hard link", []string{data, hardlink}},
		{"offset inside the data", []string{"--hash-offset", "4096", data, hardlink}},
		{"offset at the last block", []string{"--hash-offset", "1044480", data, data}},
		{"offset past the end without --data-blocks", []string{"--hash-offset", "1048576", data, data}},
		{"--data-blocks past the offset", []string{"--data-blocks", "256", "--hash-offset", "1044480", data, data}},
		{"no superblock, offset inside", []string{"--no-superblock", "--hash-offset", "8192", data, data}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, errs, code := ibVerityGuarded(t, context.Background(), append([]string{"verity", "format", "--salt", "00"}, c.args...)...)
			if code != exitUsage {
				t.Errorf("exit %d (%s), want %d", code, errs, exitUsage)
			}
			hashArg := c.args[len(c.args)-1]
			if !strings.Contains(errs, c.args[len(c.args)-2]) || !strings.Contains(errs, hashArg) {
				t.Errorf("message does not name both paths: %q", errs)
			}
			if got, err := os.ReadFile(data); err != nil || !bytes.Equal(got, orig) {
				t.Fatalf("DATA was changed (%v)", err)
			}
			if fi, err := os.Lstat(symlink); err != nil || fi.Mode()&os.ModeSymlink == 0 {
				t.Fatalf("the symlink was replaced: %v %v", fi, err)
			}
		})
	}

	// Data and tree in one file, the data bounded below the offset: the
	// layout veritysetup accepts, written in place, byte for byte as
	// veritysetup writes it.
	off := "1048576"
	out, errs, code := ibVerityGuarded(t, context.Background(), "verity", "format", "--salt", "00", "--uuid", "11111111-2222-3333-4444-555555555555",
		"--data-blocks", "256", "--hash-offset", off, data, hardlink)
	if code != 0 {
		t.Fatalf("data-bounded format in one file: exit %d: %s", code, errs)
	}
	root := strings.TrimSpace(out)
	if got, _ := os.ReadFile(data); !bytes.Equal(got[:len(orig)], orig) {
		t.Fatal("the data area was changed")
	}
	if _, errs, code := ibVerityGuarded(t, context.Background(), "verity", "verify", "--hash-offset", off, data, data, root); code != 0 {
		t.Fatalf("verify in one file: exit %d: %s", code, errs)
	}
	if vs := testutil.Tool(t, "veritysetup"); vs != "" {
		theirs := filepath.Join(dir, "theirs")
		writeVerityPattern(t, theirs, 1<<20)
		testutil.Run(t, vs, "format", "--salt", "00", "--uuid", "11111111-2222-3333-4444-555555555555",
			"--data-blocks", "256", "--hash-offset", off, theirs, theirs)
		a, _ := os.ReadFile(data)
		b, _ := os.ReadFile(theirs)
		if !bytes.Equal(a, b) {
			t.Errorf("one-file layout differs from veritysetup's (%d and %d bytes)", len(a), len(b))
		}
	}
}

// TestHostileVeritySpecialFiles gives the verity commands a FIFO, a directory and
// a character device where DATA or HASH belong: each fails at once and the
// special file is left alone.
func TestHostileVeritySpecialFiles(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	writeVerityPattern(t, data, 1<<20)
	hash := filepath.Join(dir, "hash")
	out, errs, code := ib("verity", "format", "--salt", "00", data, hash)
	if code != 0 {
		t.Fatalf("format: %d %s", code, errs)
	}
	root := strings.TrimSpace(out)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	for _, special := range []string{fifo, sub, "/dev/zero"} {
		before, err := os.Lstat(special)
		if err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{
			{"format", special, filepath.Join(dir, "new-hash")},
			{"format", data, special},
			{"verify", special, hash, root},
			{"verify", data, special, root},
			{"dump", special},
		} {
			_, errs, code := ibVerityGuarded(t, context.Background(), append([]string{"verity"}, args...)...)
			if code != exitError || !strings.Contains(errs, special) {
				t.Errorf("%v: exit %d, %q; want %d naming %s", args, code, errs, exitError, special)
			}
		}
		after, err := os.Lstat(special)
		if err != nil || after.Mode() != before.Mode() {
			t.Errorf("%s changed: %v -> %v (%v)", special, before.Mode(), after, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "new-hash")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed format left a hash file: %v", err)
	}
}

// processReadBytes is the number of bytes this process has read (rchar in
// /proc/self/io), or -1 where that is not available.
func processReadBytes() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "rchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}

// TestHostileVerityCancelled cancels format and verify (as SIGINT or SIGTERM
// does through main's context) while they hash: each stops with a non-zero
// exit; format creates no hash file and leaves an existing one unchanged.
func TestHostileVerityCancelled(t *testing.T) {
	if processReadBytes() < 0 {
		t.Skip("needs /proc/self/io to see the hashing under way")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	f, err := os.Create(data)
	if err != nil {
		t.Fatal(err)
	}
	// A sparse 8 GiB: far more hashing than happens before the cancel.
	if err := f.Truncate(8 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	existing := filepath.Join(dir, "existing")
	os.WriteFile(existing, []byte("old contents"), 0o600)
	newHash := filepath.Join(dir, "new")
	for _, args := range [][]string{
		{"format", data, newHash},
		{"format", data, existing},                          // replaced through a temporary file
		{"format", "--hash-offset", "4096", data, existing}, // written in place
		{"verify", "--no-superblock", "--salt", "-", data, existing, strings.Repeat("00", 32)},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		type result struct {
			errs string
			code int
		}
		done := make(chan result, 1)
		start := processReadBytes()
		go func() {
			var out, errb bytes.Buffer
			code := run(ctx, append([]string{"verity"}, args...), &out, &errb)
			done <- result{errb.String(), code}
		}()
		// Cancel once 64 MiB of the data have been read: mid-hashing.
		var r result
		deadline := time.After(verityHangLimit)
	wait:
		for {
			select {
			case r = <-done:
				t.Fatalf("%v finished before it was cancelled: exit %d %s", args, r.code, r.errs)
			case <-deadline:
				t.Fatalf("%v read nothing within %v", args, verityHangLimit)
			case <-time.After(time.Millisecond):
				if processReadBytes()-start >= 64<<20 {
					break wait
				}
			}
		}
		cancel()
		select {
		case r = <-done:
		case <-time.After(verityHangLimit):
			t.Fatalf("%v did not stop within %v of the cancel", args, verityHangLimit)
		}
		if r.code == exitOK || !strings.Contains(r.errs, "interrupted") {
			t.Errorf("cancelled %v: exit %d, %q", args, r.code, r.errs)
		}
		if b, err := os.ReadFile(existing); err != nil || string(b) != "old contents" {
			t.Errorf("%v: existing hash file changed: %q %v", args, b, err)
		}
		if _, err := os.Lstat(newHash); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%v: left %s: %v", args, newHash, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("files left behind: %v", names)
	}
}

// TestFormatFailureLeavesNoHashFile: a format that fails creates nothing
// (issue 8, item 14) and leaves an existing hash file as it was.
func TestFormatFailureLeavesNoHashFile(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	writeVerityPattern(t, small, 100) // less than one data block
	data := filepath.Join(dir, "data")
	writeVerityPattern(t, data, 1<<20)
	hash := filepath.Join(dir, "hash")
	for _, args := range [][]string{
		{small, hash},
		{"--data-blocks", "257", data, hash},
	} {
		if _, errs, code := ib(append([]string{"verity", "format"}, args...)...); code != exitError {
			t.Errorf("%v: exit %d %s, want %d", args, code, errs, exitError)
		}
		if _, err := os.Lstat(hash); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%v: a failed format left %s: %v", args, hash, err)
		}
	}
	// Fails before hashing: a missing directory, a dangling symbolic link
	// (which is not replaced by a file).
	dangling := filepath.Join(dir, "dangling")
	os.Symlink("nowhere", dangling)
	for _, h := range []string{filepath.Join(dir, "nodir", "hash"), dangling} {
		if _, errs, code := ib("verity", "format", data, h); code != exitError || !strings.Contains(errs, h) {
			t.Errorf("HASH %s: exit %d %q, want %d naming it", h, code, errs, exitError)
		}
	}
	if fi, err := os.Lstat(dangling); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("the dangling link was replaced: %v", err)
	}
	os.Remove(dangling)
	os.WriteFile(hash, []byte("keep me"), 0o600)
	for _, args := range [][]string{
		{small, hash},
		{"--hash-offset", "4096", "--data-blocks", "257", data, hash},
	} {
		ib(append([]string{"verity", "format"}, args...)...)
		if b, err := os.ReadFile(hash); err != nil || string(b) != "keep me" {
			t.Errorf("%v: existing hash file changed to %q (%v)", args, b, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 3 {
		t.Errorf("%d files in the directory, want 3 (temporary files left?)", len(ents))
	}
}

// TestFormatReplacesHashFile: an existing hash file written from offset 0
// is replaced whole, keeping its mode; through a symlink, the link's target
// is replaced and the link stays.
func TestFormatReplacesHashFile(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	writeVerityPattern(t, data, 1<<20)
	want := filepath.Join(dir, "want")
	out, errs, code := ib("verity", "format", "--salt", "00", "--uuid", "11111111-2222-3333-4444-555555555555", data, want)
	if code != 0 {
		t.Fatalf("format: %d %s", code, errs)
	}
	root := strings.TrimSpace(out)
	wantBytes, _ := os.ReadFile(want)
	target := filepath.Join(dir, "target")
	os.WriteFile(target, bytes.Repeat([]byte{0xff}, 3<<20), 0o600)
	link := filepath.Join(dir, "link")
	os.Symlink("target", link)
	if _, errs, code := ib("verity", "format", "--salt", "00", "--uuid", "11111111-2222-3333-4444-555555555555", data, link); code != 0 {
		t.Fatalf("format through a symlink: %d %s", code, errs)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the symlink was replaced: %v", err)
	}
	got, _ := os.ReadFile(target)
	if !bytes.Equal(got, wantBytes) {
		t.Errorf("hash file through the link: %d bytes, want the %d of a fresh format", len(got), len(wantBytes))
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600 kept", fi.Mode().Perm())
	}
	if _, errs, code := ib("verity", "verify", data, link, root); code != 0 {
		t.Errorf("verify: %d %s", code, errs)
	}
}

// TestVeritySpareMismatchNamesByte: a changed byte in the zero tail of a
// hash block is named by its own position (and the area's start, which is
// what veritysetup prints).
func TestVeritySpareMismatchNamesByte(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	writeVerityPattern(t, data, 10*4096) // 10 entries: the level-0 block's tail is spare
	hash := filepath.Join(dir, "hash")
	out, errs, code := ib("verity", "format", "--salt", "00", data, hash)
	if code != 0 {
		t.Fatalf("format: %d %s", code, errs)
	}
	root := strings.TrimSpace(out)
	b, _ := os.ReadFile(hash)
	// Superblock block 0, level 0 at block 1: entries 0-9 then the spare tail.
	const changed = 4096 + 10*32 + 1000
	b[changed] = 0x5a
	os.WriteFile(hash, b, 0o644)
	_, errs, code = ib("verity", "verify", data, hash, root)
	if code != exitCorrupt || !strings.Contains(errs, strconv.Itoa(changed)) || !strings.Contains(errs, strconv.Itoa(4096+10*32)) {
		t.Errorf("exit %d, %q; want %d naming byte %d and the area at %d", code, errs, exitCorrupt, changed, 4096+10*32)
	}
}
