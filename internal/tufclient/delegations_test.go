package tufclient

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/updog/updog/internal/tufclient/tuftest"
	"github.com/updog/updog/signing"
)

type deleg struct {
	from, to    string
	paths       []string // nil: "*"
	terminating bool
}

func role(name string, paths []string, terminating bool) metadata.DelegatedRole {
	if paths == nil {
		paths = []string{"*"}
	}
	return metadata.DelegatedRole{Name: name, Paths: paths, Terminating: terminating}
}

func build(t *testing.T, ds []deleg) *tuftest.Sim {
	s := tuftest.New(t)
	for _, d := range ds {
		s.Delegate(d.from, role(d.to, d.paths, d.terminating))
	}
	s.Publish("targets")
	return s
}

func names(rs []tuftest.Request) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Role)
	}
	return out
}

// The conformance suite's delegation graphs: the roles a search for a
// missing target visits, in order, each fetched once.
func TestDelegationTraversalOrder(t *testing.T) {
	for _, c := range []struct {
		name    string
		ds      []deleg
		visited []string
	}{
		{"basic", []deleg{{"targets", "A", nil, false}}, []string{"A"}},
		{"single level", []deleg{{"targets", "A", nil, false}, {"targets", "B", nil, false}}, []string{"A", "B"}},
		{"two levels", []deleg{{"targets", "A", nil, false}, {"targets", "B", nil, false}, {"B", "C", nil, false}}, []string{"A", "B", "C"}},
		{"depth first", []deleg{{"targets", "A", nil, false}, {"targets", "B", nil, false}, {"A", "C", nil, false}, {"A", "D", nil, false}}, []string{"A", "C", "D", "B"}},
		{"three levels depth first", []deleg{{"targets", "A", nil, false}, {"targets", "B", nil, false}, {"A", "C", nil, false}, {"C", "D", nil, false}}, []string{"A", "C", "D", "B"}},
		{"terminating ignores all but its descendants", []deleg{{"targets", "A", nil, false}, {"targets", "B", nil, false}, {"A", "C", nil, true}, {"A", "D", nil, false}}, []string{"A", "C"}},
		{"terminating three levels", []deleg{{"targets", "A", nil, false}, {"targets", "B", nil, false}, {"A", "C", nil, true}, {"C", "D", nil, false}}, []string{"A", "C", "D"}},
		{"paths prune a branch", []deleg{{"targets", "A", []string{"*.py"}, false}, {"targets", "B", nil, false}, {"A", "C", nil, false}}, []string{"B"}},
		{"paths prune a deeper branch", []deleg{{"targets", "A", nil, false}, {"targets", "B", nil, false}, {"A", "C", []string{"*.py"}, false}, {"C", "D", nil, false}}, []string{"A", "B"}},
		{"cycle", []deleg{{"targets", "A", nil, false}, {"targets", "B", nil, false}, {"B", "C", nil, false}, {"C", "D", nil, false}, {"D", "B", nil, false}}, []string{"A", "B", "C", "D"}},
		{"two roles delegate to a third", []deleg{{"targets", "A", nil, false}, {"targets", "B", nil, false}, {"B", "C", nil, false}, {"A", "C", nil, false}}, []string{"A", "C", "B"}},
		{"a third reached through the second", []deleg{{"targets", "A", nil, false}, {"targets", "B", nil, false}, {"B", "C", nil, false}, {"A", "C", []string{"*.py"}, false}}, []string{"A", "B", "C"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := tuftest.New(t)
			keys := map[string]bool{}
			for _, d := range c.ds {
				// A role delegated twice keeps one key, as the suite's does.
				if keys[d.to] {
					s.Delegate(d.from, role(d.to, d.paths, d.terminating), s.Signers[d.to]...)
				} else {
					s.Delegate(d.from, role(d.to, d.paths, d.terminating))
				}
				keys[d.to] = true
			}
			s.Publish("targets")
			cl := refreshed(t, s, t.TempDir())
			var visited []string
			_, err := cl.search(ctx, "missingpath", func(r string) { visited = append(visited, r) })
			if !errors.Is(err, ErrNoTarget) {
				t.Fatalf("missing target: %v", err)
			}
			if want := append([]string{"targets"}, c.visited...); !slices.Equal(visited, want) {
				t.Errorf("visited %v, want %v", visited, want)
			}
			if got := names(s.DelegatedRequests()); !slices.Equal(got, c.visited) {
				t.Errorf("fetched %v, want %v", got, c.visited)
			}
		})
	}
}

// The conformance suite's target search through paths.
func TestDelegationTargetSearch(t *testing.T) {
	s := build(t, []deleg{
		{"targets", "A", []string{"*.doc", "*.md"}, false},
		{"targets", "B", []string{"releases/*/*"}, false},
		{"B", "C", []string{"releases/x/*"}, false},
		{"B", "D", []string{"releases/y/*.zip"}, false},
	})
	s.AddTarget("targets", "targetfile", []byte("targetfile content"))
	s.AddTarget("A", "README.md", []byte("README by A"))
	s.AddTarget("C", "releases/x/x_v1", []byte("x release by C"))
	s.AddTarget("D", "releases/y/y_v1.zip", []byte("y release by D"))
	s.AddTarget("D", "releases/z/z_v1.zip", []byte("z release by D"))
	s.Publish("targets", "A", "B", "C", "D")
	for _, c := range []struct {
		path    string
		found   bool
		fetched []string
	}{
		{"targetfile", true, nil},
		{"README.md", true, []string{"A"}},
		{"releases/x/x_v1", true, []string{"B", "C"}},
		{"releases/y/y_v1.zip", true, []string{"B", "D"}},
		{"releases/z/z_v1.zip", false, []string{"B"}},
	} {
		t.Run(c.path, func(t *testing.T) {
			s.ResetRequests()
			cl := refreshed(t, s, t.TempDir())
			b, err := cl.ReadTarget(ctx, c.path, 0)
			if c.found != (err == nil) {
				t.Fatalf("found %v: %v", c.found, err)
			}
			if c.found && !sameBytes(b, s.Artifacts[c.path]) {
				t.Errorf("content %q", b)
			}
			if !c.found && !errors.Is(err, ErrNoTarget) {
				t.Errorf("%v, want ErrNoTarget", err)
			}
			if got := names(s.DelegatedRequests()); !slices.Equal(got, c.fetched) {
				t.Errorf("fetched %v, want %v", got, c.fetched)
			}
		})
	}
}

func sameBytes(a, b []byte) bool { return string(a) == string(b) }

// The diamond: targets delegates to A and B; both delegate to C, A with
// the key C is signed by, B with another key. Once C has been trusted
// through A, a search that reaches it through B must verify it against B's
// key and refuse it. go-tuf's updater reuses C by name and accepts it.
func TestHostileDiamondDelegation(t *testing.T) {
	s := tuftest.New(t)
	s.Delegate("targets", role("A", []string{"*/*"}, false))
	s.Delegate("targets", role("B", []string{"*/*"}, false))
	s.Delegate("A", role("C", []string{"x/*"}, false)) // C's own key
	other := tuftest.Key(t)
	s.Delegate("B", role("C", []string{"y/*"}, false), other) // a key C is not signed by
	s.Signers["C"] = s.Signers["C"][:1]
	s.AddTarget("C", "x/file", []byte("through A"))
	s.AddTarget("C", "y/file", []byte("through B"))
	s.Publish("targets", "A", "B", "C")

	// go-tuf's updater: the defect this walk exists for.
	if _, err := goTUFTarget(t, s, "x/file", "y/file"); err != nil {
		t.Logf("go-tuf refused the diamond (fixed upstream?): %v", err)
	} else {
		t.Log("go-tuf's updater accepts y/file through B with A's verdict on C")
	}

	cache := t.TempDir()
	c := refreshed(t, s, cache)
	if _, err := c.ReadTarget(ctx, "x/file", 0); err != nil {
		t.Fatalf("x/file through A: %v", err)
	}
	_, err := c.Target("y/file")
	if !errors.Is(err, ErrSignature) {
		t.Fatalf("y/file through B: %v, want ErrSignature", err)
	}
	// A later run with C cached: the same verdict, and C fetched again
	// rather than trusted from the cache.
	s.ResetRequests()
	c2 := refreshed(t, s, cache)
	if _, err := c2.Target("y/file"); !errors.Is(err, ErrSignature) {
		t.Fatalf("cached C through B: %v", err)
	}
	if got := names(s.DelegatedRequests()); !slices.Contains(got, "C") {
		t.Errorf("C was not fetched again: %v", got)
	}
	// C is still trusted through A.
	if _, err := c2.Target("x/file"); err != nil {
		t.Fatalf("x/file after the refusal: %v", err)
	}
}

// Duplicate delegation names in one delegator are malformed metadata.
func TestHostileDuplicateRoleNames(t *testing.T) {
	s := tuftest.New(t)
	s.Delegate("targets", role("A", []string{"a/*"}, false))
	s.Delegate("targets", role("A", []string{"*"}, false), tuftest.Key(t))
	s.Publish("targets")
	c := client(t, s, "", time.Time{})
	if err := c.Refresh(ctx); !errors.Is(err, ErrMetadata) {
		t.Fatalf("duplicate role: %v", err)
	}
	for _, name := range []string{"snapshot", "root", ""} {
		s := tuftest.New(t)
		s.Delegate("targets", role("A", nil, false))
		s.Targets.Signed.Delegations.Roles[0].Name = name
		s.Publish("targets")
		if err := client(t, s, "", time.Time{}).Refresh(ctx); !errors.Is(err, ErrMetadata) {
			t.Errorf("role named %q: %v", name, err)
		}
	}
}

func TestTerminatingStopsSearch(t *testing.T) {
	s := build(t, []deleg{{"targets", "A", []string{"a/*"}, true}, {"targets", "B", []string{"*/*"}, false}})
	s.AddTarget("B", "a/file", []byte("B's copy"))
	s.AddTarget("B", "b/file", []byte("B's other"))
	s.Publish("A", "B")
	c := refreshed(t, s, "")
	if _, err := c.Target("a/file"); !errors.Is(err, ErrNoTarget) {
		t.Fatalf("a/file behind a terminating role: %v", err)
	}
	if _, err := c.Target("b/file"); err != nil {
		t.Fatalf("b/file: %v", err)
	}
}

// path_hash_prefixes are hex prefixes of the SHA-256 of the target path;
// go-tuf v2.4.2 compares them with base64 and never finds the target.
func TestPathHashPrefixes(t *testing.T) {
	const target = "bins/file.bin"
	sum := sha256.Sum256([]byte(target))
	prefix := hex.EncodeToString(sum[:])[:2]
	wrong := fmt.Sprintf("%02x", (sum[0]+1)&0xff)
	s := tuftest.New(t)
	s.Delegate("targets", metadata.DelegatedRole{Name: "wrong-bin", PathHashPrefixes: []string{wrong}})
	s.Delegate("targets", metadata.DelegatedRole{Name: "bin", PathHashPrefixes: []string{prefix}})
	s.AddTarget("bin", target, []byte("hashed bin"))
	s.AddTarget("wrong-bin", "bins/other", []byte("not for this path"))
	s.Publish("targets", "bin", "wrong-bin")
	c := refreshed(t, s, "")
	b, err := c.ReadTarget(ctx, target, 0)
	if err != nil || string(b) != "hashed bin" {
		t.Fatalf("%q %v", b, err)
	}
	if got := names(s.DelegatedRequests()); !slices.Equal(got, []string{"bin"}) {
		t.Errorf("fetched %v: only the matching bin should be", got)
	}
	if _, err := goTUFTarget(t, s, target); err == nil {
		t.Log("go-tuf found the hashed bin (fixed upstream)")
	}
}

func TestSuccinctRoles(t *testing.T) {
	s := tuftest.New(t)
	k := tuftest.Key(t)
	id, _ := k.Key().ID()
	s.Targets.Signed.Delegations = &metadata.Delegations{Keys: map[string]*metadata.Key{id: k.Key()},
		SuccinctRoles: &metadata.SuccinctRoles{KeyIDs: []string{id}, Threshold: 1, BitLength: 4, NamePrefix: "bin"}}
	const target = "some/file"
	bin := s.Targets.Signed.Delegations.SuccinctRoles.GetRolesForTarget(target)[0].Name
	s.Delegated[bin] = metadata.Targets(s.Now.Add(time.Hour))
	s.Signers[bin] = []signing.Signer{k}
	s.AddTarget(bin, target, []byte("in a succinct bin"))
	s.Publish("targets", bin)
	c := refreshed(t, s, "")
	if b, err := c.ReadTarget(ctx, target, 0); err != nil || string(b) != "in a succinct bin" {
		t.Fatalf("%q %v", b, err)
	}
}

// A chain of roles longer than the bound: the search gives up after
// MaxDelegations roles.
func TestHostileDelegationVisitBound(t *testing.T) {
	s := tuftest.New(t)
	prev := "targets"
	const depth = 40
	for i := 1; i <= depth; i++ {
		n := fmt.Sprintf("r%02d", i)
		s.Delegate(prev, role(n, nil, false))
		prev = n
	}
	s.AddTarget("r20", "shallow", []byte("found"))
	s.AddTarget("r38", "deep", []byte("too deep"))
	var all []string
	for n := range s.Delegated {
		all = append(all, n)
	}
	s.Publish(append([]string{"targets"}, all...)...)
	c := refreshed(t, s, "")
	if _, err := c.Target("shallow"); err != nil {
		t.Fatalf("shallow: %v", err)
	}
	s.ResetRequests()
	if _, err := c.Target("deep"); !errors.Is(err, ErrNoTarget) {
		t.Fatalf("deep: %v", err)
	}
	if n := len(s.DelegatedRequests()); n > MaxDelegations {
		t.Errorf("%d roles fetched, more than %d", n, MaxDelegations)
	}
}

func TestDelegatedRoleExpiry(t *testing.T) {
	s := tuftest.New(t)
	s.Delegate("targets", role("delegated", []string{"delegatedpath/*"}, false))
	s.Delegated["delegated"].Signed.Expires = s.Now.Add(7 * 24 * time.Hour)
	s.AddTarget("delegated", "delegatedpath/first", []byte("first"))
	s.AddTarget("delegated", "delegatedpath/second", []byte("second"))
	s.Publish("targets", "delegated")
	cache := t.TempDir()
	c := refreshed(t, s, cache)
	if _, err := c.ReadTarget(ctx, "delegatedpath/first", 0); err != nil {
		t.Fatal(err)
	}
	day18 := s.Now.Add(18 * 24 * time.Hour)
	c = client(t, s, cache, day18)
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	var ee *ExpiredError
	if _, err := c.Target("delegatedpath/second"); !errors.As(err, &ee) || ee.Role != "delegated" {
		t.Fatalf("expired delegated role: %v", err)
	}
	// The repository publishes a fresh version: it is used.
	s.Delegated["delegated"].Signed.Expires = s.Now.Add(21 * 24 * time.Hour)
	s.Publish("delegated")
	c = client(t, s, cache, day18)
	if err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Target("delegatedpath/second"); err != nil {
		t.Fatalf("renewed delegated role: %v", err)
	}
}

// Unusual role names are requested percent-encoded and cached under
// percent-encoded names inside the cache directory.
func TestUnusualRoleNames(t *testing.T) {
	for _, name := range []string{"?", "#", "/delegatedrole", "../delegatedrole", "🍺/30", "a b,c"} {
		t.Run(name, func(t *testing.T) {
			s := tuftest.New(t)
			s.Delegate("targets", role(name, nil, false))
			s.Publish("targets")
			cache := t.TempDir()
			c := refreshed(t, s, cache)
			if _, err := c.Target("nonexistent target"); !errors.Is(err, ErrNoTarget) {
				t.Fatal(err)
			}
			if got := names(s.DelegatedRequests()); !slices.Equal(got, []string{name}) {
				t.Errorf("requests %v", got)
			}
			ents, _ := os.ReadDir(cache)
			var files []string
			for _, e := range ents {
				files = append(files, e.Name())
			}
			if len(files) != 5 || !slices.Contains(files, EscapeRole(name)+".json") {
				t.Errorf("cache holds %v", files)
			}
			for _, f := range files {
				if strings.ContainsAny(f, "/?#") {
					t.Errorf("cache file %q", f)
				}
			}
			// Nothing was written beside the cache.
			if ents, _ := os.ReadDir(filepath.Dir(cache)); len(ents) != 1 {
				t.Errorf("beside the cache: %v", ents)
			}
		})
	}
}

func TestEscapeRole(t *testing.T) {
	for in, want := range map[string]string{
		"role1": "role1", "../../path/like/dubious": "..%2F..%2Fpath%2Flike%2Fdubious", "🍺/30": "%F0%9F%8D%BA%2F30",
		"a b,c": "a%20b%2Cc", "?": "%3F", "-._~": "-._~",
	} {
		if got := EscapeRole(in); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

func TestAllTargets(t *testing.T) {
	s := build(t, []deleg{{"targets", "A", []string{"a/*"}, false}, {"targets", "B", []string{"*/*"}, false}})
	s.AddTarget("targets", "top", []byte("1"))
	s.AddTarget("A", "a/x", []byte("2"))
	s.AddTarget("A", "b/not-trusted", []byte("3")) // A is not trusted for b/*
	s.AddTarget("B", "b/y", []byte("4"))
	s.Publish("targets", "A", "B")
	c := refreshed(t, s, "")
	fs, err := c.AllTargets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range fs {
		got = append(got, f.Target.Path+"@"+f.Role)
	}
	if want := []string{"a/x@A", "b/y@B", "top@targets"}; !slices.Equal(got, want) {
		t.Errorf("%v, want %v", got, want)
	}
}

// Cycles: a role delegating to itself, and two roles delegating to each
// other. The search ends, each role fetched once.
func TestHostileDelegationCycle(t *testing.T) {
	s := tuftest.New(t)
	s.Delegate("targets", role("A", nil, false))
	s.Delegate("A", role("A", nil, false), s.Signers["A"]...)
	s.Delegate("A", role("B", nil, false))
	s.Delegate("B", role("A", nil, false), s.Signers["A"]...)
	s.Publish("targets", "A", "B")
	c := refreshed(t, s, "")
	if _, err := c.Target("missing"); !errors.Is(err, ErrNoTarget) {
		t.Fatalf("cycle: %v", err)
	}
	if got := names(s.DelegatedRequests()); !slices.Equal(got, []string{"A", "B"}) {
		t.Errorf("fetched %v", got)
	}
}
