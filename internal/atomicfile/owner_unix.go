//go:build unix

package atomicfile

import (
	"os"
	"syscall"
)

// keepOwner gives f the owner and group of old. Running as root it must
// succeed; otherwise only the group can change (to one the caller belongs
// to), and failing to keep it is not an error: the file simply becomes the
// caller's, as with any editor.
func keepOwner(f *os.File, old os.FileInfo) error {
	want, ok := old.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	cur, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || (cur.Uid == want.Uid && cur.Gid == want.Gid) {
		return nil
	}
	if os.Geteuid() == 0 {
		return f.Chown(int(want.Uid), int(want.Gid))
	}
	if cur.Gid != want.Gid {
		_ = f.Chown(-1, int(want.Gid)) // best effort, see above
	}
	return nil
}

// MatchOwner gives the file at path the owner and group of like, when
// running as root and they differ: a file root makes beside a user's file
// (a lock file, say) stays usable by that user. Elsewhere it does nothing.
func MatchOwner(path string, like os.FileInfo) error {
	want, ok := like.Sys().(*syscall.Stat_t)
	if !ok || os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if cur, ok := fi.Sys().(*syscall.Stat_t); ok && cur.Uid == want.Uid && cur.Gid == want.Gid {
		return nil
	}
	return os.Lchown(path, int(want.Uid), int(want.Gid))
}
