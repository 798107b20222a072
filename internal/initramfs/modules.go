package initramfs

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ModuleListName is where an archive lists the modules to load, in order:
// one module a line, its path relative to the archive's root, followed by
// " optional" when a failure to load it is not an error (a soft
// dependency, such as an accelerated implementation the CPU may lack).
// Blank lines and lines starting with '#' are ignored.
const ModuleListName = "lib/modules/load.list"

// MaxModuleList bounds the module list a reader accepts.
const MaxModuleList = 64 << 10

// ErrModule means a module, or one of its dependencies, cannot be found or
// read.
var ErrModule = errors.New("initramfs: kernel module")

// Module is one module to load.
type Module struct {
	// Name is the module's name with '-' written '_' (as the kernel
	// names it: dm_mod, dm_verity).
	Name string
	// Path is the .ko file's path relative to the modules tree
	// (kernel/drivers/md/dm-mod.ko); in an archive it is under
	// lib/modules/<version>/.
	Path string
	// Optional is set for a module only a soft dependency asked for.
	Optional bool
}

// ModName normalises a module name: '-' and '_' are the same to the
// kernel.
func ModName(s string) string { return strings.ReplaceAll(s, "-", "_") }

type modInfo struct {
	path    string
	depends []string
	pre     []string // softdep pre: names or aliases
	aliases []string
}

// readModInfo reads the .modinfo section of a module: NUL-separated
// key=value strings.
func readModInfo(file string) (*modInfo, error) {
	f, err := elf.Open(file)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrModule, file, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("%w: %s has no .modinfo section", ErrModule, file)
	}
	if sec.Size > 1<<20 {
		return nil, fmt.Errorf("%w: %s: .modinfo of %d bytes", ErrModule, file, sec.Size)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: reading .modinfo: %w", ErrModule, file, err)
	}
	mi := &modInfo{}
	for _, kv := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					mi.depends = append(mi.depends, ModName(d))
				}
			}
		case "softdep":
			mi.pre = append(mi.pre, parseSoftdepPre(v)...)
		case "alias":
			mi.aliases = append(mi.aliases, v)
		}
	}
	return mi, nil
}

// parseSoftdepPre returns the "pre:" names of a softdep value such as
// "pre: crypto-crc32c post: foo".
func parseSoftdepPre(v string) []string {
	var out []string
	pre := false
	for _, w := range strings.Fields(v) {
		switch w {
		case "pre:":
			pre = true
		case "post:":
			pre = false
		default:
			if pre {
				out = append(out, w)
			}
		}
	}
	return out
}

// tree indexes the modules of a modules tree (lib/modules/<version>).
type tree struct {
	dir     string
	files   map[string]string // name -> path relative to dir
	builtin map[string]bool
	info    map[string]*modInfo
}

func openTree(dir string) (*tree, error) {
	t := &tree{dir: dir, files: map[string]string{}, builtin: map[string]bool{}, info: map[string]*modInfo{}}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && strings.HasSuffix(p, ".ko") {
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			name := ModName(strings.TrimSuffix(d.Name(), ".ko"))
			if old, ok := t.files[name]; !ok || rel < old {
				t.files[name] = rel
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: reading the modules tree %s: %w", ErrModule, dir, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if l := strings.TrimSpace(sc.Text()); l != "" {
				t.builtin[ModName(strings.TrimSuffix(filepath.Base(l), ".ko"))] = true
			}
		}
	}
	return t, nil
}

func (t *tree) modInfo(name string) (*modInfo, error) {
	if mi, ok := t.info[name]; ok {
		return mi, nil
	}
	rel := t.files[name]
	mi, err := readModInfo(filepath.Join(t.dir, rel))
	if err != nil {
		return nil, err
	}
	mi.path = rel
	t.info[name] = mi
	return mi, nil
}

// byAlias returns the modules with an alias equal to a (sorted), reading
// every module's .modinfo the first time.
func (t *tree) byAlias(a string) ([]string, error) {
	var out []string
	names := make([]string, 0, len(t.files))
	for n := range t.files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		mi, err := t.modInfo(n)
		if err != nil {
			return nil, err
		}
		for _, al := range mi.aliases {
			if al == a {
				out = append(out, n)
				break
			}
		}
	}
	return out, nil
}

// ResolveModules returns the modules named (by module name, '-' or '_'),
// with everything they depend on, in an order that loads every module
// after its dependencies: depmod's job, done from the modules' .modinfo
// sections (depends=, and softdep= "pre:" entries, which may be module
// names or aliases such as crypto-crc32c; those are optional). dir is a
// modules tree, lib/modules/<version> of a kernel package. A name that is
// built into the kernel (listed in modules.builtin) is skipped; a name
// found nowhere is an error matching ErrModule. Compressed modules
// (.ko.xz, .ko.zst) are not supported.
func ResolveModules(dir string, names []string) ([]Module, error) {
	t, err := openTree(dir)
	if err != nil {
		return nil, err
	}
	var (
		out   []Module
		state = map[string]int{} // 1 visiting, 2 done
	)
	var visit func(name string, optional bool, from string) error
	visit = func(name string, optional bool, from string) error {
		switch state[name] {
		case 1:
			return fmt.Errorf("%w: dependency cycle through %s", ErrModule, name)
		case 2:
			return nil
		}
		if _, ok := t.files[name]; !ok {
			if t.builtin[name] {
				state[name] = 2
				return nil
			}
			where := ""
			if from != "" {
				where = " (needed by " + from + ")"
			}
			return fmt.Errorf("%w: %s%s is neither in %s nor built in", ErrModule, name, where, dir)
		}
		state[name] = 1
		mi, err := t.modInfo(name)
		if err != nil {
			state[name] = 0
			return err
		}
		for _, p := range mi.pre {
			cands := []string{ModName(p)}
			if _, ok := t.files[cands[0]]; !ok && !t.builtin[cands[0]] {
				if cands, err = t.byAlias(p); err != nil {
					return err
				}
			}
			for _, c := range cands {
				if err := visit(c, true, name); err != nil && !errors.Is(err, ErrModule) {
					return err
				}
			}
		}
		for _, d := range mi.depends {
			if err := visit(d, optional, name); err != nil {
				state[name] = 0
				return err
			}
		}
		state[name] = 2
		out = append(out, Module{Name: name, Path: mi.path, Optional: optional})
		return nil
	}
	for _, n := range names {
		if err := visit(ModName(n), false, ""); err != nil {
			return nil, err
		}
	}
	// A module asked for by name, or needed by one, is required even when
	// a soft dependency reached it first.
	required := map[string]bool{}
	for _, n := range names {
		markRequired(t, ModName(n), required)
	}
	for i := range out {
		if required[out[i].Name] {
			out[i].Optional = false
		}
	}
	return out, nil
}

func markRequired(t *tree, name string, seen map[string]bool) {
	if seen[name] {
		return
	}
	seen[name] = true
	if mi, ok := t.info[name]; ok {
		for _, d := range mi.depends {
			markRequired(t, d, seen)
		}
	}
}

// ModuleList is the text of the module list (ModuleListName) for mods,
// whose paths are relative to prefix in the archive (lib/modules/<version>).
func ModuleList(prefix string, mods []Module) []byte {
	var b bytes.Buffer
	b.WriteString("# kernel modules to load, in order (initramfs.ModuleList)\n")
	for _, m := range mods {
		b.WriteString(filepath.ToSlash(filepath.Join(prefix, m.Path)))
		if m.Optional {
			b.WriteString(" optional")
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// ListEntry is one line of a module list.
type ListEntry struct {
	Path     string // relative to the archive's root
	Optional bool
}

// ParseModuleList reads a module list. Paths must be relative and must not
// climb out with "..".
func ParseModuleList(b []byte) ([]ListEntry, error) {
	if len(b) > MaxModuleList {
		return nil, fmt.Errorf("%w: module list of %d bytes, more than %d", ErrModule, len(b), MaxModuleList)
	}
	var out []ListEntry
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		e := ListEntry{Path: f[0]}
		switch {
		case len(f) == 2 && f[1] == "optional":
			e.Optional = true
		case len(f) != 1:
			return nil, fmt.Errorf("%w: module list line %d: %q", ErrModule, i+1, line)
		}
		if _, err := cleanName(e.Path); err != nil || strings.HasPrefix(e.Path, "/") {
			return nil, fmt.Errorf("%w: module list line %d: %q is not a relative path inside the archive", ErrModule, i+1, e.Path)
		}
		out = append(out, e)
	}
	return out, nil
}
