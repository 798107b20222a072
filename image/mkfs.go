package image

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrTooBig means something does not fit where it must go (see
// TooBigError).
var ErrTooBig = errors.New("image: does not fit")

// TooBigError says what does not fit where, with both sizes.
type TooBigError struct {
	What  string
	Need  int64 // bytes needed (at least, with AtLeast)
	Have  int64 // bytes there are
	Where string
	// AtLeast says Need is only known to be more than Have (a mkfs tool
	// ran out of space or inodes).
	AtLeast bool
	// Detail is what the tool said.
	Detail string
}

func (e *TooBigError) Error() string {
	need := sizeText(e.Need)
	if e.AtLeast {
		need = "more than " + sizeText(e.Have)
	}
	s := fmt.Sprintf("%s needs %s but %s holds %s", e.What, need, e.Where, sizeText(e.Have))
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s
}

// Is makes a TooBigError match ErrTooBig.
func (e *TooBigError) Is(target error) bool { return target == ErrTooBig }

// sizeText writes n bytes for people: exact bytes, and MiB.
func sizeText(n int64) string {
	return fmt.Sprintf("%d bytes (%.1f MiB)", n, float64(n)/(1<<20))
}

// ErrMissingTool means an external program a build needs is not installed
// (see MissingToolError).
var ErrMissingTool = errors.New("image: a needed program is not installed")

// MissingToolError names the program and the Debian package that has it.
type MissingToolError struct {
	Tool, Package string
}

func (e *MissingToolError) Error() string {
	return fmt.Sprintf("%s is not installed (Debian package %s; scripts/install-deps.sh installs it)", e.Tool, e.Package)
}

// Is makes a MissingToolError match ErrMissingTool.
func (e *MissingToolError) Is(target error) bool { return target == ErrMissingTool }

// ToolError is an external program that failed, with the end of what it
// printed.
type ToolError struct {
	Tool   string
	Err    error
	Output string
}

func (e *ToolError) Error() string {
	out := strings.TrimSpace(e.Output)
	if out == "" {
		return fmt.Sprintf("%s: %v", e.Tool, e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", e.Tool, e.Err, out)
}

func (e *ToolError) Unwrap() error { return e.Err }

// Root file system types.
const (
	FSExt4     = "ext4"
	FSErofs    = "erofs"
	FSSquashfs = "squashfs"
)

// toolPackages are the Debian packages of the programs a build runs.
var toolPackages = map[string]string{
	"mke2fs":     "e2fsprogs",
	"mkfs.erofs": "erofs-utils",
	"mksquashfs": "squashfs-tools",
}

// findTool finds a program in PATH or in /usr/sbin and /sbin (which a
// non-root PATH often lacks).
func findTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", &MissingToolError{Tool: name, Package: toolPackages[name]}
}

// maxToolOutput bounds what is kept of a tool's output for its error.
const maxToolOutput = 8 << 10

// tailBuffer keeps the last maxToolOutput bytes written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > maxToolOutput {
		t.b = append(t.b[:0], t.b[len(t.b)-maxToolOutput:]...)
	}
	return len(p), nil
}

// runTool runs a program with env added to a copy of ours less
// SOURCE_DATE_EPOCH (every tool gets its times from its flags, and
// mksquashfs refuses both). The program is killed when ctx ends.
func runTool(ctx context.Context, env []string, tool string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, tool, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SOURCE_DATE_EPOCH=") && !strings.HasPrefix(kv, "E2FSPROGS_FAKE_TIME=") &&
			!strings.HasPrefix(kv, "MKE2FS_CONFIG=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var out tailBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Stdin = nil
	err := cmd.Run()
	if ctx.Err() != nil {
		return string(out.b), fmt.Errorf("%s stopped: %w", filepath.Base(tool), ctx.Err())
	}
	if err != nil {
		return string(out.b), &ToolError{Tool: filepath.Base(tool), Err: err, Output: string(out.b)}
	}
	return string(out.b), nil
}

// mke2fsConf pins the features of the file systems imgbuild makes, so
// the host's /etc/mke2fs.conf changes nothing: a read-only file system
// (no journal, nothing reserved), the ext4 features every kernel since
// 4.x mounts, metadata checksums on.
const mke2fsConf = `[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384

[fs_types]
	ext4 = {
		features = extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
`

// ext4Job is one mke2fs run: the tree src into size bytes at offset off
// of target.
type ext4Job struct {
	tool, conf string
	src        string
	target     string
	off, size  int64
	uuid       [16]byte
	hashSeed   [16]byte
	epoch      int64
}

// mkExt4 runs mke2fs -d: no loop device, no mount, no root.
func mkExt4(ctx context.Context, j ext4Job) error {
	ext := fmt.Sprintf("hash_seed=%s,root_owner=0:0,nodiscard,lazy_itable_init=0,offset=%d", formatUUID(j.hashSeed), j.off)
	out, err := runTool(ctx, []string{"E2FSPROGS_FAKE_TIME=" + strconv.FormatInt(j.epoch, 10), "MKE2FS_CONFIG=" + j.conf},
		j.tool, "-F", "-q", "-t", "ext4", "-b", "4096", "-m", "0", "-U", formatUUID(j.uuid), "-E", ext,
		"-d", j.src, j.target, strconv.FormatInt(j.size/1024, 10)+"k")
	if err != nil {
		low := strings.ToLower(out)
		var te *ToolError
		if errors.As(err, &te) && (strings.Contains(low, "could not allocate") || strings.Contains(low, "no space left") ||
			strings.Contains(low, "no free space")) {
			return &TooBigError{What: "the file system of " + j.src, Need: j.size + 1, Have: j.size, AtLeast: true,
				Where: "the partition", Detail: lastLine(out)}
		}
		return err
	}
	return nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// mkCompactFS builds an erofs or squashfs image of src at target.
func mkCompactFS(ctx context.Context, fsType, tool, src, target string, uuid [16]byte, epoch int64, allRoot bool) error {
	e := strconv.FormatInt(epoch, 10)
	var args []string
	switch fsType {
	case FSErofs:
		// No tail packing: each file's data starts on a block of its own,
		// so a file that changes moves the others by whole blocks and the
		// blocks of the rest are found again by a delta update (with its
		// tails packed into the metadata, 70 % of the frames of a package
		// update differ, instead of 5 %).
		args = []string{"--quiet", "-T" + e, "-U" + formatUUID(uuid), "-Enoinline_data"}
		if allRoot {
			args = append(args, "--all-root")
		}
		args = append(args, target, src)
	case FSSquashfs:
		args = []string{src, target, "-noappend", "-quiet", "-no-progress", "-all-time", e, "-mkfs-time", e}
		if allRoot {
			args = append(args, "-all-root")
		}
	default:
		return fmt.Errorf("image: unknown root file system type %q", fsType)
	}
	_, err := runTool(ctx, nil, tool, args...)
	return err
}

// treeSize estimates the space a directory tree takes in a file system of
// 4096-byte blocks: each regular file's data rounded up to whole blocks,
// plus a block per directory. It stops early once the estimate passes
// limit (0: no limit), and when ctx ends.
func treeSize(ctx context.Context, dir string, limit int64) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		switch {
		case d.IsDir():
			total += 4096
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			total += (fi.Size() + 4095) &^ 4095
		}
		if limit > 0 && total > limit {
			return fs.SkipAll
		}
		return nil
	})
	return total, err
}
