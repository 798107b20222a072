package gptprio

import (
	"errors"
	"fmt"
	"testing"
)

// state is a compact view of the gptprio bits of both sets.
type state struct {
	a, b       Attr
	everBooted bool
}

func stateOf(t testing.TB, tb *Table) state {
	t.Helper()
	l, err := FindLayout(tb)
	if err != nil {
		t.Fatal(err)
	}
	ever, _ := HasBootEverSucceeded(tb)
	return state{Attrs(tb, l, SetA), Attrs(tb, l, SetB), ever}
}

func prio(p, tries int, ok bool) Attr {
	return Attr(0).WithPriority(p).WithTries(tries).WithSuccessful(ok)
}

func withAttrs(t testing.TB, a, b Attr) *Table {
	tb := layoutTable(t, 64, 512, abParts)
	tb.Partitions[2].Attributes = a
	tb.Partitions[5].Attributes = b
	return tb
}

func TestNext(t *testing.T) {
	for _, c := range []struct {
		name string
		a, b Attr
		want Set
		err  error
	}{
		{"fresh A", prio(1, 0, true), 0, SetA, nil},
		{"upgrade pending", prio(1, 0, true), prio(2, 1, false), SetB, nil},
		{"B tried and failed", prio(1, 0, true), prio(2, 0, false), SetA, nil},
		{"B marked good", prio(1, 0, true), prio(2, 0, true), SetB, nil},
		{"tie goes to table order", prio(2, 0, true), prio(2, 0, true), SetA, nil},
		{"priority 0 never boots", prio(0, 0, true), prio(0, 5, true), 0, ErrNoBootableSet},
		{"nothing to try", prio(3, 0, false), prio(2, 0, false), 0, ErrNoBootableSet},
		{"tries without success", prio(1, 2, false), 0, SetA, nil},
		{"highest wins", prio(14, 1, false), prio(15, 1, false), SetB, nil},
	} {
		got, err := Next(withAttrs(t, c.a, c.b))
		if !errors.Is(err, c.err) || (err == nil && got != c.want) {
			t.Errorf("%s: Next = %v, %v; want %v, %v", c.name, got, err, c.want, c.err)
		}
	}
}

func TestBootUsesATry(t *testing.T) {
	s, nt, used, err := Boot(withAttrs(t, prio(1, 0, true), prio(2, 3, false)))
	if err != nil || s != SetB || !used {
		t.Fatalf("Boot = %v, used %v, %v", s, used, err)
	}
	if got := stateOf(t, nt).b; got != prio(2, 2, false) {
		t.Errorf("B after boot: %v, want tries 2", got)
	}
	_, _, used, _ = Boot(withAttrs(t, prio(1, 0, true), 0))
	if used {
		t.Error("booting a set with no tries left claimed to use one")
	}
}

func TestBootNext(t *testing.T) {
	tb := withAttrs(t, prio(1, 0, true), prio(2, 3, false))
	c, nt, err := BootNext(tb)
	if err != nil || c.Set != SetB || c.Partition != 6 || !c.TryUsed || c.Before != prio(2, 3, false) || nt == nil {
		t.Fatalf("BootNext = %+v, %v, %v", c, nt != nil, err)
	}
	if got := stateOf(t, nt).b; got != prio(2, 2, false) {
		t.Errorf("B after BootNext: %v, want tries 2", got)
	}
	if got := stateOf(t, tb).b; got != prio(2, 3, false) {
		t.Errorf("BootNext changed its input: B is %v", got)
	}
	c, nt, err = BootNext(withAttrs(t, prio(1, 0, true), prio(2, 0, false)))
	if err != nil || c.Set != SetA || c.Partition != 3 || c.TryUsed || nt != nil {
		t.Errorf("a successful set: BootNext = %+v, table %v, %v; want A, nothing to write", c, nt != nil, err)
	}
	if _, nt, err = BootNext(withAttrs(t, prio(1, 0, false), 0)); !errors.Is(err, ErrNoBootableSet) || nt != nil {
		t.Errorf("no bootable set: %v", err)
	}
}

// TestBootNextSkip: the boot selector passes over a set that failed to
// start in this boot.
func TestBootNextSkip(t *testing.T) {
	for _, c := range []struct {
		name    string
		a, b    Attr
		skip    []Set
		want    Set
		tryUsed bool
		err     error
	}{
		{"proven A failed, B proven", prio(2, 0, true), prio(1, 0, true), []Set{SetA}, SetB, false, nil},
		{"proven B failed, A has tries", prio(1, 2, false), prio(2, 0, true), []Set{SetB}, SetA, true, nil},
		{"proven B failed, A tried out", prio(1, 0, false), prio(2, 0, true), []Set{SetB}, 0, false, ErrNoBootableSet},
		{"proven A failed, B priority 0", prio(1, 0, true), prio(0, 0, true), []Set{SetA}, 0, false, ErrNoBootableSet},
		{"both failed", prio(1, 0, true), prio(2, 0, true), []Set{SetB, SetA}, 0, false, ErrNoBootableSet},
		{"skipping the set not chosen changes nothing", prio(2, 0, true), prio(1, 0, true), []Set{SetB}, SetA, false, nil},
	} {
		tb := withAttrs(t, c.a, c.b)
		ch, nt, err := BootNext(tb, c.skip...)
		if !errors.Is(err, c.err) || err == nil && (ch.Set != c.want || ch.TryUsed != c.tryUsed || (nt != nil) != c.tryUsed) {
			t.Errorf("%s: BootNext(skip %v) = %+v, table %v, %v; want set %v, try used %v, %v", c.name, c.skip, ch, nt != nil, err, c.want, c.tryUsed, c.err)
			continue
		}
		if nt != nil {
			if got := Attrs(nt, mustLayout(t, nt), c.want); got.Tries() != Attrs(tb, mustLayout(t, tb), c.want).Tries()-1 {
				t.Errorf("%s: set %v after the boot: %v, want one try fewer", c.name, c.want, got)
			}
		}
	}
}

func TestPreconditions(t *testing.T) {
	fresh := withAttrs(t, prio(1, 0, true), 0)
	if _, err := UpgradeToInactive(fresh, SetA); !errors.Is(err, ErrInactiveNotValid) {
		t.Errorf("upgrade without mark-valid: %v", err)
	}
	pending := withAttrs(t, prio(1, 0, true), prio(2, 1, false))
	if _, err := UpgradeToInactive(pending, SetA); !errors.Is(err, ErrInactiveAlreadyMarked) {
		t.Errorf("upgrade twice: %v", err)
	}
	if _, err := RollbackToInactive(fresh, SetA); !errors.Is(err, ErrInactiveWontBoot) {
		t.Errorf("rollback to an empty set: %v", err)
	}
	single := layoutTable(t, 64, 512, []part{abParts[2], abParts[3], abParts[4], abParts[8]})
	for name, f := range map[string]func(*Table, Set) (*Table, error){
		"clear": ClearInactive, "upgrade": UpgradeToInactive, "cancel": CancelUpgrade, "rollback": RollbackToInactive,
	} {
		if _, err := f(single, SetA); !errors.Is(err, ErrSingleSet) {
			t.Errorf("%s on a single-set disk: %v, want ErrSingleSet", name, err)
		}
	}
	if _, err := MarkInactiveValid(fresh, SetA, 16); err == nil {
		t.Error("tries 16 accepted")
	}
	noPrivate := layoutTable(t, 64, 512, abParts[:8])
	if _, err := MarkSuccessfulBoot(noPrivate, SetA); !errors.Is(err, ErrNoPrivate) {
		t.Errorf("mark-successful without PRIVATE: %v", err)
	}
	bad := layoutTable(t, 64, 512, []part{abParts[2], abParts[3], abParts[5]})
	if _, err := FindLayout(bad); !errors.Is(err, ErrLayout) {
		t.Errorf("missing HASH: %v", err)
	}
}

// TestLifeCycle walks the whole A/B cycle the way a host lives it, with the
// bootloader simulated by Boot.
func TestLifeCycle(t *testing.T) {
	d := freshDisk(t, 512)
	active := SetA
	step := func(name string, f func(*Table, Set) (*Table, error)) {
		t.Helper()
		nt, err := f(mustRead(t, d), active)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := Write(d, nt); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	boot := func() Set {
		t.Helper()
		s, nt, used, err := Boot(mustRead(t, d))
		if err != nil {
			t.Fatal(err)
		}
		if used {
			if err := Write(d, nt); err != nil {
				t.Fatal(err)
			}
		}
		active = s
		return s
	}
	prepare := func() {
		step("clear-inactive", ClearInactive)
		step("mark-inactive-valid", func(tb *Table, s Set) (*Table, error) { return MarkInactiveValid(tb, s, 1) })
		step("upgrade-to-inactive", UpgradeToInactive)
	}

	if s := boot(); s != SetA {
		t.Fatalf("fresh disk boots %v", s)
	}
	step("mark-successful-boot", MarkSuccessfulBoot)
	if !stateOf(t, mustRead(t, d)).everBooted {
		t.Fatal("bit 57 on PRIVATE not set")
	}
	prepare()
	if got := stateOf(t, mustRead(t, d)); got.a != prio(1, 0, true) || got.b != prio(2, 1, false) {
		t.Fatalf("after upgrade: %+v", got)
	}
	if s := boot(); s != SetB {
		t.Fatalf("upgrade pending boots %v, want b", s)
	}
	if got := stateOf(t, mustRead(t, d)).b; got.Tries() != 0 {
		t.Fatalf("the try was not used: %v", got)
	}
	// B never marks itself good (it failed to come up): the next boot falls back.
	if s := boot(); s != SetA {
		t.Fatalf("after a failed try, boots %v, want a", s)
	}
	prepare()
	if s := boot(); s != SetB {
		t.Fatalf("second upgrade boots %v", s)
	}
	step("mark-successful-boot", MarkSuccessfulBoot)
	for i := 0; i < 3; i++ {
		if s := boot(); s != SetB {
			t.Fatalf("good B: boot %d picks %v", i, s)
		}
	}
	// Roll back to A (it is still marked successful), then cancel that.
	step("rollback-to-inactive", RollbackToInactive)
	if s, _ := Next(mustRead(t, d)); s != SetA {
		t.Fatalf("after rollback, next is %v", s)
	}
	step("cancel-upgrade", CancelUpgrade)
	if got := stateOf(t, mustRead(t, d)); got.a.Priority() != 0 || got.b.Priority() != 2 {
		t.Fatalf("after cancel: %+v", got)
	}
	if s, _ := Next(mustRead(t, d)); s != SetB {
		t.Fatalf("after cancel, next is %v", s)
	}
}

// TestCancelAndRollbackFromEachState tries the two reversing commands from
// every state of the cycle and checks what the bootloader would do next.
func TestCancelAndRollbackFromEachState(t *testing.T) {
	states := map[string]*Table{
		"fresh":           withAttrs(t, prio(1, 0, true), 0),
		"valid":           withAttrs(t, prio(1, 0, true), prio(0, 1, false)),
		"upgrade pending": withAttrs(t, prio(1, 0, true), prio(2, 1, false)),
		"tried, failed":   withAttrs(t, prio(1, 0, true), prio(2, 0, false)),
		"both good":       withAttrs(t, prio(1, 0, true), prio(2, 0, true)),
	}
	for name, tb := range states {
		if nt, err := CancelUpgrade(tb, SetA); err != nil {
			t.Errorf("%s: cancel: %v", name, err)
		} else if s, err := Next(nt); err != nil || s != SetA {
			t.Errorf("%s: after cancel, next = %v, %v; want a", name, s, err)
		}
		nt, err := RollbackToInactive(tb, SetA)
		wouldBoot := stateOf(t, tb).b.WillBoot()
		switch {
		case wouldBoot && err != nil:
			t.Errorf("%s: rollback refused: %v", name, err)
		case !wouldBoot && !errors.Is(err, ErrInactiveWontBoot):
			t.Errorf("%s: rollback to a set that won't boot: %v", name, err)
		case wouldBoot:
			if s, _ := Next(nt); s != SetB {
				t.Errorf("%s: after rollback, next = %v", name, s)
			}
		}
	}
}

// TestCrashStates replays every disk state that a power cut during each
// mutating command could leave, from several starting states and for both
// sector sizes, and checks that the table reads back as the old or the new
// one, never an error and never a mixture.
func TestCrashStates(t *testing.T) {
	commands := map[string]func(*Table, Set) (*Table, error){
		"mark-successful-boot": MarkSuccessfulBoot,
		"clear-inactive":       ClearInactive,
		"mark-inactive-valid":  func(tb *Table, s Set) (*Table, error) { return MarkInactiveValid(tb, s, 1) },
		"upgrade-to-inactive":  UpgradeToInactive,
		"cancel-upgrade":       CancelUpgrade,
		"rollback-to-inactive": RollbackToInactive,
		"next": func(tb *Table, _ Set) (*Table, error) {
			_, nt, _, err := Boot(tb)
			return nt, err
		},
		"rewrite-table": func(tb *Table, _ Set) (*Table, error) { return tb.Clone(), nil },
	}
	starts := map[string]state{
		"fresh":           {prio(1, 0, true), 0, false},
		"valid":           {prio(1, 0, true), prio(0, 1, false), true},
		"upgrade pending": {prio(1, 0, true), prio(2, 1, false), true},
		"both good":       {prio(1, 0, true), prio(2, 0, true), true},
	}
	total := 0
	for _, ss := range []int{512, 4096} {
		for _, damaged := range []bool{false, true} {
			for sname, st := range starts {
				for cname, cmd := range commands {
					name := fmt.Sprintf("%d/%s/%s/primary-damaged=%v", ss, sname, cname, damaged)
					d := freshDisk(t, ss)
					tb := mustRead(t, d)
					l, _ := FindLayout(tb)
					setAttrs(tb, l, SetA, st.a)
					setAttrs(tb, l, SetB, st.b)
					tb.Partitions[l.Private-1].Attributes = Attr(0).WithBootEverSucceeded(st.everBooted)
					if err := Write(d, tb); err != nil {
						t.Fatal(err)
					}
					if damaged {
						corruptPrimaryHeader(t, d)
					}
					old := mustRead(t, d)
					nt, err := cmd(old, SetA)
					if err != nil {
						continue // refused by a precondition: nothing to write
					}
					d.ResetLog()
					if err := Write(d, nt); err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					crashes := d.CrashStates()
					sawOld, sawNew := false, false
					for _, c := range crashes {
						got, err := Read(c.Disk)
						if err != nil {
							t.Fatalf("%s: crash state %q: unreadable: %v", name, c.Name, err)
						}
						isOld, isNew := sameContent(got, old), sameContent(got, nt)
						if !isOld && !isNew {
							t.Fatalf("%s: crash state %q reads as neither old nor new", name, c.Name)
						}
						sawOld, sawNew = sawOld || isOld, sawNew || isNew
						total++
					}
					if !sawOld || !sawNew {
						t.Fatalf("%s: %d crash states never showed the old (%v) or the new (%v) table", name, len(crashes), sawOld, sawNew)
					}
					// The final state is the new table, with both copies sound.
					final := mustRead(t, crashes[len(crashes)-1].Disk)
					if !sameContent(final, nt) || final.RecoveredFromBackup || final.BackupStale {
						t.Fatalf("%s: final state is not a clean new table", name)
					}
				}
			}
		}
	}
	t.Logf("checked %d crash states", total)
}

// threeSets is the A/B layout with a third set appended.
var threeSets = append(append([]part{}, abParts...),
	part{TypeBoot, "BOTTLEROCKET-BOOT-C", 2},
	part{TypeRoot, "BOTTLEROCKET-ROOT-C", 8},
	part{TypeHash, "BOTTLEROCKET-HASH-C", 1})

// TestThirdSet: a disk with three BOOT/ROOT/HASH sets is seen as it is.
// Next applies the bootloader's rule over every BOOT partition (issue 8:
// with BOOT-C at priority 15 and successful, the bootloader boots C, and
// Next said A), and the A/B state changes refuse the disk.
func TestThirdSet(t *testing.T) {
	tb := layoutTable(t, 64, 512, threeSets)
	l, err := FindLayout(tb)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Sets) != 3 || l.Sets[2] != (SetParts{10, 11, 12}) || l.Dual() || l.Names()[2] != "c" {
		t.Fatalf("layout %+v", l)
	}
	tb.Partitions[9].Attributes = prio(15, 0, true)
	if s, n, err := NextPartition(tb); err != nil || s != 2 || n != 10 || s.String() != "c" {
		t.Fatalf("Next = %v (partition %d), %v; the bootloader boots BOOT-C", s, n, err)
	}
	tb.Partitions[9].Attributes = prio(15, 2, false)
	s, nt, used, err := Boot(tb)
	if err != nil || s != 2 || !used || nt.Partitions[9].Attributes.Tries() != 1 {
		t.Fatalf("Boot = %v, %v, %v", s, used, err)
	}
	tb.Partitions[9].Attributes = prio(15, 0, false)
	if s, _ := Next(tb); s != SetA {
		t.Fatalf("C out of tries: Next = %v", s)
	}
	for name, f := range map[string]func(*Table, Set) (*Table, error){
		"clear": ClearInactive, "upgrade": UpgradeToInactive, "cancel": CancelUpgrade, "rollback": RollbackToInactive,
		"mark-valid":      func(tb *Table, s Set) (*Table, error) { return MarkInactiveValid(tb, s, 1) },
		"mark-successful": MarkSuccessfulBoot,
	} {
		if _, err := f(tb, SetA); !errors.Is(err, ErrLayout) || !errors.Is(err, ErrTooManySets) {
			t.Errorf("%s on a three-set disk: %v, want ErrLayout and ErrTooManySets", name, err)
		}
	}
	// A third BOOT without its ROOT and HASH is not a layout.
	if _, err := FindLayout(layoutTable(t, 64, 512, threeSets[:10])); !errors.Is(err, ErrLayout) {
		t.Errorf("BOOT-C alone: %v", err)
	}
}

func TestPrivateDescribeShowsBit57(t *testing.T) {
	a := Attr(0)
	b := a.WithBootEverSucceeded(true)
	if got := a.Describe(TypePrivate) + " -> " + b.Describe(TypePrivate); got !=
		"boot_ever_succeeded=false (0x0000000000000000) -> boot_ever_succeeded=true (0x0200000000000000)" {
		t.Errorf("PRIVATE change shown as %q", got)
	}
	if got := prio(2, 1, false).Describe(TypeBoot); got != prio(2, 1, false).String() {
		t.Errorf("BOOT: %q", got)
	}
	if got := Attr(4).Describe(TypeEFI); got != "0x0000000000000004" {
		t.Errorf("EFI: %q", got)
	}
}
