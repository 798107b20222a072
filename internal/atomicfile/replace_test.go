//go:build unix

package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestHostileReplaceFollowsSymlink (issue 8 item 10): replacing a file through a
// symlink used to replace the link with a file and leave the real file
// unchanged. The link stays a link, the file it names gets the contents,
// and the temporary file lives (and is renamed) in the real file's
// directory.
func TestHostileReplaceFollowsSymlink(t *testing.T) {
	root := t.TempDir()
	realDir := filepath.Join(root, "real")
	linkDir := filepath.Join(root, "links")
	for _, d := range []string{realDir, linkDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	target := filepath.Join(realDir, "manifest.json")
	if err := os.WriteFile(target, []byte("old"), 0o640); err != nil {
		t.Fatal(err)
	}
	// A chain: links/a -> b (relative) -> ../real/manifest.json.
	if err := os.Symlink("../real/manifest.json", filepath.Join(linkDir, "b")); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(linkDir, "a")
	if err := os.Symlink("b", link); err != nil {
		t.Fatal(err)
	}
	if got, err := Resolve(link); err != nil || got != target {
		t.Errorf("Resolve(%s) = %q, %v; want %s", link, got, err, target)
	}
	if err := ReplaceFile(link, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v %v", fi.Mode(), err)
	}
	if got, _ := os.ReadFile(target); string(got) != "new" {
		t.Fatalf("the real file holds %q, want new", got)
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want the old 0640 kept", fi.Mode().Perm())
	}
	for _, d := range []string{realDir, linkDir} {
		ents, _ := os.ReadDir(d)
		if len(ents) != map[string]int{realDir: 1, linkDir: 2}[d] {
			t.Errorf("%s holds %v: a temporary file was left", d, ents)
		}
	}
	// A link to a file that does not exist is an error, not a new file.
	dangling := filepath.Join(linkDir, "dangling")
	os.Symlink("nowhere", dangling)
	if err := ReplaceFile(dangling, []byte("x"), 0o644); err == nil {
		t.Error("wrote through a dangling symlink")
	}
	// A path that does not exist is created with perm.
	fresh := filepath.Join(realDir, "fresh")
	if err := ReplaceFile(fresh, []byte("x"), 0o604); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(fresh); fi.Mode().Perm() != 0o604 {
		t.Errorf("new file mode %v, want 0604", fi.Mode().Perm())
	}
}

// TestHostileReplaceKeepsOwner (issue 8 item 19): a root edit used to make the
// file root's.
func TestHostileReplaceKeepsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "manifest.json")
	if err := os.WriteFile(p, []byte("old"), 0o664); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o664); err != nil { // whatever the umask
		t.Fatal(err)
	}
	if err := os.Chown(p, 1234, 2345); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	os.Symlink("manifest.json", link)
	for _, path := range []string{p, link} {
		if err := ReplaceFile(path, []byte("new"), 0o600); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != 1234 || st.Gid != 2345 || fi.Mode().Perm() != 0o664 {
			t.Errorf("after replacing %s: owner %d:%d mode %v, want 1234:2345 0664", path, st.Uid, st.Gid, fi.Mode().Perm())
		}
	}
}

func TestMatchOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	dir := t.TempDir()
	like, other := filepath.Join(dir, "like"), filepath.Join(dir, "other")
	os.WriteFile(like, nil, 0o644)
	os.WriteFile(other, nil, 0o644)
	os.Chown(like, 1234, 2345)
	fi, _ := os.Stat(like)
	if err := MatchOwner(other, fi); err != nil {
		t.Fatal(err)
	}
	fi, _ = os.Stat(other)
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1234 || st.Gid != 2345 {
		t.Errorf("owner %d:%d, want 1234:2345", st.Uid, st.Gid)
	}
}

// TestHostileReplaceRefusesSpecialFiles: a FIFO, a directory or a device is not
// replaced by a regular file.
func TestHostileReplaceRefusesSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	for _, p := range []string{fifo, sub} {
		err := ReplaceFile(p, []byte("x"), 0o644)
		if !errors.Is(err, ErrNotRegular) {
			t.Errorf("ReplaceFile(%s) = %v, want ErrNotRegular", p, err)
		}
	}
	if fi, err := os.Lstat(fifo); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("the FIFO was replaced: %v %v", fi, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("temporary files left: %v", ents)
	}
}

func TestReplaceFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	os.WriteFile(p, []byte("old"), 0o644)
	boom := errors.New("boom")
	err := Replace(p, 0o644, func(w io.Writer) error {
		w.Write([]byte("half"))
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if got, _ := os.ReadFile(p); string(got) != "old" {
		t.Fatalf("old contents lost: %q", got)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("temporary file left: %v", ents)
	}
}
