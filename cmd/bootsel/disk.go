package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/updog/updog/bootconf"
	"github.com/updog/updog/gptprio"
	"github.com/updog/updog/internal/blockdev"
)

// Everything here looks at the machine through sysfs and device nodes
// under b.root ("/" at boot; a fake tree in tests): no udev, no /dev/disk
// symbolic links.

// errNoDisk means no disk with BOOT partitions appeared in time.
var errNoDisk = errors.New("bootsel: no disk with BOOT partitions")

// errNoDevice means a device named on the command line did not appear in
// time.
var errNoDevice = errors.New("bootsel: device not found")

// wholeDisks lists the whole disks sysfs knows (sys/block), in name order,
// leaving out device-mapper devices (dm-*: ours, or someone's, never a
// boot disk).
func wholeDisks(root string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(root, "sys", "block"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "dm-") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// readTable reads the GPT of disk name (read-only; a shared lock is not
// needed to look: the selection re-reads under the exclusive lock).
func readTable(root, name string) (*gptprio.Table, error) {
	d, err := blockdev.Open(filepath.Join(root, "dev", name), blockdev.Options{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return gptprio.Read(d)
}

// wait calls try every poll interval until it reports done or returns an
// error that is not errRetry, or the timeout passes (then the last
// retryable error is returned, or one saying what was waited for).
func (b *booter) wait(ctx context.Context, what string, try func() (bool, error)) error {
	deadline := b.now().Add(b.timeout)
	var last error
	for {
		done, err := try()
		if done {
			return nil
		}
		if err != nil && !errors.Is(err, errRetry) {
			return err
		}
		last = err
		if !b.now().Before(deadline) {
			if last != nil {
				return fmt.Errorf("waited %v for %s: %w", b.timeout, what, last)
			}
			return fmt.Errorf("waited %v for %s", b.timeout, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(b.poll):
		}
	}
}

// errRetry marks an error a wait goes on after.
var errRetry = errors.New("not there yet")

// findBootDisk returns the path of the disk to boot from: want (a name
// under dev/, from bootsel.disk=) once it has a readable GPT, or else the
// first disk in name order whose GPT has a BOOT partition, waiting for
// one to appear.
func (b *booter) findBootDisk(ctx context.Context, want string) (string, error) {
	var found string
	err := b.wait(ctx, "a disk with BOOT partitions", func() (bool, error) {
		disks, err := wholeDisks(b.root)
		if err != nil {
			return false, fmt.Errorf("%w: %w", errRetry, err)
		}
		var why []string
		for _, name := range disks {
			if want != "" && name != want {
				continue
			}
			t, err := readTable(b.root, name)
			if err != nil {
				why = append(why, fmt.Sprintf("%s: %v", name, err))
				continue
			}
			if _, err := gptprio.FindLayout(t); err != nil {
				why = append(why, fmt.Sprintf("%s: %v", name, err))
				continue
			}
			found = filepath.Join(b.root, "dev", name)
			return true, nil
		}
		if len(why) == 0 {
			why = append(why, "no disk yet")
		}
		return false, fmt.Errorf("%w: %s", errRetry, strings.Join(why, "; "))
	})
	if err != nil {
		return "", fmt.Errorf("%w: %w", errNoDisk, err)
	}
	return found, nil
}

// partitionDevice returns the node and the "major:minor" of partition n of
// the disk at diskPath, from sysfs (errRetry while the kernel has not
// listed it yet).
func partitionDevice(root, diskPath string, n int) (node, majMin string, err error) {
	node, err = blockdev.PartitionNode(root, diskPath, n)
	if err != nil {
		return "", "", fmt.Errorf("%w: %w", errRetry, err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "sys", "class", "block", filepath.Base(node), "dev"))
	if err != nil {
		return "", "", fmt.Errorf("%w: %w", errRetry, err)
	}
	majMin = strings.TrimSpace(string(raw))
	if _, err := os.Stat(node); err != nil {
		return "", "", fmt.Errorf("%w: %w", errRetry, err)
	}
	return node, majMin, nil
}

// resolvePartRef finds the device a PARTUUID=<guid>[/PARTNROFF=<n>]
// reference names, as the kernel's name_to_dev_t does, by reading the GPT
// of every disk: the partition whose unique GUID it is, plus the offset.
// It returns errRetry (wrapped) while no disk has that partition.
func resolvePartRef(root, ref string) (node, majMin string, err error) {
	uuid, off, err := bootconf.ParsePartRef(ref)
	if err != nil {
		return "", "", err
	}
	disks, err := wholeDisks(root)
	if err != nil {
		return "", "", fmt.Errorf("%w: %w", errRetry, err)
	}
	for _, name := range disks {
		t, err := readTable(root, name)
		if err != nil {
			continue
		}
		for _, p := range t.Used() {
			if p.ID.String() != uuid {
				continue
			}
			n := p.Number + off
			if t.Partition(n) == nil {
				return "", "", fmt.Errorf("bootsel: %s: partition %d of %s (PARTNROFF=%d from partition %d) does not exist", ref, n, name, off, p.Number)
			}
			return partitionDevice(root, filepath.Join(root, "dev", name), n)
		}
	}
	return "", "", fmt.Errorf("%w: no disk has a partition with GUID %s", errRetry, uuid)
}
