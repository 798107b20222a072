package initramfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// This file is early userspace: what an initramfs's /init does before the
// real root is mounted, and the switch to it.

// MountEarly mounts proc, sysfs and devtmpfs on root/proc, root/sys and
// root/dev (creating the directories). One already mounted is left as it
// is.
func MountEarly(root string) error {
	for _, m := range []struct{ fs, dir string }{{"proc", "proc"}, {"sysfs", "sys"}, {"devtmpfs", "dev"}} {
		dir := filepath.Join(root, m.dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		flags := uintptr(unix.MS_NOSUID)
		if m.fs != "devtmpfs" {
			flags |= unix.MS_NOEXEC | unix.MS_NODEV
		}
		err := unix.Mount(m.fs, dir, m.fs, flags, "")
		if err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("initramfs: mounting %s on %s: %w", m.fs, dir, os.NewSyscallError("mount", err))
		}
	}
	return nil
}

// MountOptions are the options of Mount.
type MountOptions struct {
	// ReadOnly mounts read-only.
	ReadOnly bool
	// Inert mounts without device nodes, set-user-ID or execution: a file
	// system only read from (a BOOT partition, a USB stick).
	Inert bool
	// Data is the file system's own options ("" for none).
	Data string
}

// Mount mounts source (a device node) on target (created if missing) as
// fstype.
func Mount(source, target, fstype string, o MountOptions) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	var flags uintptr
	if o.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	if o.Inert {
		flags |= unix.MS_NODEV | unix.MS_NOSUID | unix.MS_NOEXEC
	}
	if err := unix.Mount(source, target, fstype, flags, o.Data); err != nil {
		return fmt.Errorf("initramfs: mounting %s (%s) on %s: %w", source, fstype, target, os.NewSyscallError("mount", err))
	}
	return nil
}

// MountTmpfs mounts a tmpfs on target (created if missing); one already
// mounted there is fine.
func MountTmpfs(target string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	err := unix.Mount("tmpfs", target, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755")
	if err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("initramfs: mounting a tmpfs on %s: %w", target, os.NewSyscallError("mount", err))
	}
	return nil
}

// Unmount unmounts target.
func Unmount(target string) error {
	if err := unix.Unmount(target, 0); err != nil {
		return fmt.Errorf("initramfs: unmounting %s: %w", target, os.NewSyscallError("umount", err))
	}
	return nil
}

// SwitchRoot makes newRoot (a mount point) the root and executes init in
// it, as switch_root(8) does: the dev, proc, sys and run mounts are moved
// under newRoot (where it has those directories), the initramfs's own
// files are deleted (to free the memory they hold; never crossing into
// another mount), newRoot is moved onto /, the process chroots into it and
// executes init with argv and env. It returns only on failure; after the
// deletion has begun the initramfs is gone, so the caller can only reboot.
func SwitchRoot(newRoot, init string, argv, env []string) error {
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(newRoot, init), &st); err != nil {
		return fmt.Errorf("initramfs: %s in the new root: %w", init, os.NewSyscallError("stat", err))
	}
	var rootSt, newSt unix.Stat_t
	if err := unix.Stat("/", &rootSt); err != nil {
		return os.NewSyscallError("stat", err)
	}
	if err := unix.Stat(newRoot, &newSt); err != nil {
		return os.NewSyscallError("stat", err)
	}
	if rootSt.Dev == newSt.Dev {
		return fmt.Errorf("initramfs: %s is not a mount point", newRoot)
	}
	for _, d := range []string{"dev", "proc", "sys", "run"} {
		dst := filepath.Join(newRoot, d)
		if fi, err := os.Stat(dst); err != nil || !fi.IsDir() {
			continue
		}
		var s unix.Stat_t
		if err := unix.Stat("/"+d, &s); err != nil || s.Dev == rootSt.Dev {
			continue // not a mount
		}
		if err := unix.Mount("/"+d, dst, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("initramfs: moving /%s to %s: %w", d, dst, os.NewSyscallError("mount", err))
		}
	}
	if err := os.Chdir(newRoot); err != nil {
		return err
	}
	removeSameDevice("/", uint64(rootSt.Dev))
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("initramfs: moving %s onto /: %w", newRoot, os.NewSyscallError("mount", err))
	}
	if err := unix.Chroot("."); err != nil {
		return os.NewSyscallError("chroot", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	return os.NewSyscallError("execve "+init, syscall.Exec(init, argv, env))
}

// removeSameDevice deletes what is under dir on device dev, staying on
// that device: mount points (another device) and what is under them are
// left alone. Errors are ignored: it only frees memory.
func removeSameDevice(dir string, dev uint64) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil || uint64(st.Dev) != dev {
			continue
		}
		if e.IsDir() {
			removeSameDevice(p, dev)
		}
		os.Remove(p)
	}
}

// PowerOff flushes the file systems and powers the machine off. It returns
// only on failure.
func PowerOff() error {
	unix.Sync()
	return os.NewSyscallError("reboot(POWER_OFF)", unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF))
}

// Restart flushes the file systems and restarts the machine. It returns
// only on failure.
func Restart() error {
	unix.Sync()
	return os.NewSyscallError("reboot(RESTART)", unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART))
}
