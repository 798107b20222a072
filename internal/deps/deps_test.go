// Package deps holds the test that enforces the project's import rules
// (see ../shared/STYLE.md, "Package dependency direction"). It shells out
// to `go list` so that it adds no dependency of its own.
package deps

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/updog/updog/internal/testutil"
)

const mod = "github.com/updog/updog/"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func listAll(t *testing.T) map[string]pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports,Deps", "./...")
	cmd.Dir = testutil.ProjectRoot()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		pkgs[strings.TrimPrefix(p.ImportPath, mod)] = p
	}
	return pkgs
}

// chain finds an import path from a package to dep, for error messages.
func chain(pkgs map[string]pkg, from, dep string) string {
	seen := map[string]bool{from: true}
	queue := [][]string{{from}}
	for len(queue) > 0 {
		path := queue[0]
		queue = queue[1:]
		p, ok := pkgs[strings.TrimPrefix(path[len(path)-1], mod)]
		if !ok {
			continue
		}
		for _, imp := range p.Imports {
			if imp == dep || strings.HasPrefix(imp, dep+"/") {
				return strings.Join(append(path, imp), " -> ")
			}
			if !seen[imp] {
				seen[imp] = true
				queue = append(queue, append(append([]string(nil), path...), imp))
			}
		}
	}
	return from + " -> ... -> " + dep
}

// matches reports whether dep is one of the packages or under one of the
// module prefixes in list.
func matches(dep string, list []string) bool {
	for _, b := range list {
		if dep == b || strings.HasPrefix(dep, strings.TrimSuffix(b, "/")+"/") {
			return true
		}
	}
	return false
}

func TestImportRules(t *testing.T) {
	pkgs := listAll(t)
	forbid := map[string][]string{
		"gptprio":  {"net", mod + "updater", mod + "repo", mod + "image", mod + "signing", "github.com/theupdateframework", "github.com/ulikunitz", "github.com/klauspost"},
		"verity":   {"net", mod + "updater", mod + "repo", mod + "image", mod + "signing", "github.com/theupdateframework"},
		"waves":    {mod, "github.com"}, // but see allow: its policy files are TOML
		"manifest": {"github.com/theupdateframework", mod + "updater", mod + "repo"},
		"delta":    {"net", mod + "updater", mod + "repo", mod + "image", mod + "signing", mod + "internal", "github.com/theupdateframework"},
		"signing":  {mod + "updater", "net/http"},
		"repo":     {mod + "updater", mod + "image", mod + "gptprio", mod + "internal/blockdev"},
		"image":    {mod + "updater", mod + "repo", mod + "signing", "github.com/theupdateframework"},
		"updater":  {mod + "repo", mod + "signing", mod + "image", "github.com/spf13/pflag"},
		// The device client links no publisher and no private-key code.
		"cmd/updog":          {mod + "repo", mod + "signing", mod + "image"},
		"internal/tufclient": {mod + "repo", mod + "signing", mod + "image", mod + "updater", mod + "gptprio"},
		// pflag links package net for its IP flag types, so the rule for the
		// CLI is "no network client code", checked as net/http.
		"cmd/signpost": {"github.com/theupdateframework", "net/http"},
		"cmd/tuftool":  {mod + "updater", mod + "internal/blockdev"},
		"cmd/imgbuild": {mod + "updater", mod + "repo"},
		// The boot selector runs as PID 1 of the initramfs, before any
		// network: no update, publishing, signing or image code, no TUF,
		// no HTTP, no compression (the initramfs is not compressed).
		"cmd/bootsel": {mod + "updater", mod + "repo", mod + "signing", mod + "image", mod + "manifest", mod + "waves",
			mod + "internal/tufclient", mod + "internal/fetch", "github.com/theupdateframework", "net/http", "crypto/tls",
			"github.com/ulikunitz", "github.com/klauspost", "github.com/pierrec"},
		// The publisher's manifest editor, the TUF configuration tool and
		// the lock server link no device-side update code and no signing
		// keys they do not need.
		"cmd/updata":      {mod + "updater", mod + "repo", mod + "signing", "github.com/theupdateframework", "net/http"},
		"cmd/tufconf":     {mod + "updater", mod + "repo", mod + "signing", mod + "image", mod + "internal/blockdev"},
		"cmd/updog-lockd": {mod + "updater", mod + "repo", mod + "signing", mod + "image", mod + "gptprio", "github.com/theupdateframework"},
		// The boot configuration format is shared by image and bootsel:
		// standard library only.
		"bootconf":            {mod, "github.com", "golang.org/x"},
		"internal/dm":         {mod},
		"internal/kexec":      {mod},
		"internal/initramfs":  {mod},
		"internal/blockdev":   {mod},
		"internal/atomicfile": {mod},
		"internal/flock":      {mod},
		"internal/safefile":   {mod},
		"internal/sysutil":    {mod},
		"internal/fetch":      {mod},
		"internal/failpoint":  {mod},
		"internal/hugeheap":   {mod},
		// The FleetLock client and the maintenance windows: standard
		// library only.
		"internal/fleetlock": {mod, "github.com", "go.etcd.io", "golang.org/x", "google.golang.org"},
		"internal/window":    {mod, "github.com", "go.etcd.io", "golang.org/x", "google.golang.org"},
		"lockd":              {mod + "updater", mod + "repo", mod + "signing", mod + "image", mod + "gptprio", "github.com/spf13/pflag"},
		"internal/fleettest": {"go.etcd.io", "google.golang.org/grpc", mod + "lockd"},
	}
	// allow lists what a package may depend on although a forbid prefix
	// covers it.
	allow := map[string][]string{
		"waves":              {"github.com/BurntSushi/toml"},
		"internal/blockdev":  {mod + "internal/safefile"},
		"internal/fetch":     {mod + "internal/safefile"},
		"internal/initramfs": {mod + "internal/safefile"},
	}
	// Every command has a rule: a new command must say what it may not
	// link.
	for name := range pkgs {
		if _, ok := forbid[name]; strings.HasPrefix(name, "cmd/") && !ok {
			t.Errorf("command %s has no import rule: add it to the table", name)
		}
	}
	for name, bad := range forbid {
		p, ok := pkgs[name]
		if !ok {
			// A rule for a package that does not exist is a misspelling
			// (or a package removed without its rule): it would silently
			// check nothing.
			t.Errorf("import rule for %q: no such package", name)
			continue
		}
		for _, dep := range p.Deps {
			if matches(dep, allow[name]) {
				continue
			}
			for _, b := range bad {
				if matches(dep, []string{b}) {
					t.Errorf("%s must not depend on %s: %s", name, b, chain(pkgs, mod+name, dep))
				}
			}
		}
	}
	// etcd and gRPC only in the lock server.
	etcdOK := map[string]bool{"lockd": true, "cmd/updog-lockd": true}
	for name, p := range pkgs {
		if etcdOK[name] {
			continue
		}
		for _, dep := range p.Deps {
			if matches(dep, []string{"go.etcd.io", "google.golang.org/grpc"}) {
				t.Errorf("%s must not link etcd (only lockd and cmd/updog-lockd may): %s", name, chain(pkgs, mod+name, dep))
				break
			}
		}
	}
	for name, p := range pkgs {
		for _, dep := range p.Deps {
			if dep == mod+"internal/disktest" || dep == mod+"internal/testutil" || dep == mod+"internal/fleettest" {
				t.Errorf("non-test code %s links test helper %s: %s", name, dep, chain(pkgs, mod+name, dep))
			}
		}
		if strings.HasPrefix(name, "internal/") {
			continue
		}
		for _, imp := range p.Imports {
			if imp == "golang.org/x/sys/unix" {
				t.Errorf("%s imports golang.org/x/sys/unix: only internal/*_linux.go may", name)
			}
		}
	}
	// The orchestrators never import each other.
	orch := []string{"updater", "repo", "image"}
	for _, a := range orch {
		for _, b := range orch {
			if p, ok := pkgs[a]; ok && a != b {
				for _, dep := range p.Deps {
					if dep == mod+b {
						t.Errorf("%s must not import %s: %s", a, b, chain(pkgs, mod+a, dep))
					}
				}
			}
		}
	}
}
