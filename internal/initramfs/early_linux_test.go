package initramfs

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRemoveSameDevice(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"init", "lib/modules/a.ko", "lib/modules/sub/b.ko", "etc/x"} {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(dir, p), []byte("x"), 0o644)
	}
	os.Symlink("/etc/passwd", filepath.Join(dir, "link")) // removed, its target untouched
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	// Another device: nothing is removed.
	removeSameDevice(dir, uint64(st.Dev)+1)
	if _, err := os.Stat(filepath.Join(dir, "lib/modules/sub/b.ko")); err != nil {
		t.Fatalf("removed across devices: %v", err)
	}
	removeSameDevice(dir, uint64(st.Dev))
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Errorf("left %v", ents)
	}
	if _, err := os.Stat("/etc/passwd"); err != nil {
		t.Errorf("a symbolic link's target was removed: %v", err)
	}
}
