package gptprio

import (
	"errors"
	"fmt"
	"strings"
)

// Set names one partition set: A (the first BOOT/ROOT/HASH partitions in
// table order), B (the second), and, on a disk that has more (which the A/B
// commands refuse), C, D and so on.
type Set int

// The two partition sets of an A/B disk.
const (
	SetA Set = 0
	SetB Set = 1
)

// String is "a", "b", "c", ... (lower case, as --active takes it).
func (s Set) String() string {
	if s >= 0 && s < 26 {
		return string(rune('a' + s))
	}
	return fmt.Sprintf("Set(%d)", int(s))
}

// Other returns the other set of an A/B pair.
func (s Set) Other() Set { return 1 - s }

// ParseSet accepts "a", "b", "A" or "B".
func ParseSet(s string) (Set, error) {
	switch strings.ToLower(s) {
	case "a":
		return SetA, nil
	case "b":
		return SetB, nil
	}
	return 0, fmt.Errorf("gptprio: %q is not a partition set (want a or b)", s)
}

// Sentinel errors of the boot-state layer.
var (
	// ErrNoBootableSet means no BOOT partition qualifies under the boot
	// selection rule: the bootloader would have nothing to boot.
	ErrNoBootableSet = errors.New("gptprio: no bootable partition set")
	// ErrSingleSet means the disk has only one partition set, so there is
	// no inactive set to update in place.
	ErrSingleSet = errors.New("gptprio: the disk has a single partition set and cannot be updated in place")
	// ErrInactiveNotValid refuses upgrade-to-inactive when the inactive set
	// has no tries left (it was never marked valid).
	ErrInactiveNotValid = errors.New("gptprio: the inactive set is not marked valid (tries left is 0)")
	// ErrInactiveAlreadyMarked refuses upgrade-to-inactive when the
	// inactive set already has a priority or is marked successful.
	ErrInactiveAlreadyMarked = errors.New("gptprio: the inactive set is already marked for boot")
	// ErrInactiveWontBoot refuses rollback-to-inactive when the inactive
	// set would not boot.
	ErrInactiveWontBoot = errors.New("gptprio: the inactive set would not boot")
	// ErrNoPrivate means the disk has no BOTTLEROCKET-PRIVATE partition.
	ErrNoPrivate = errors.New("gptprio: the disk has no PRIVATE partition")
	// ErrLayout means the partitions of a set are missing, or the disk is
	// not one the A/B state changes can work on.
	ErrLayout = errors.New("gptprio: not an A/B disk layout")
	// ErrTooManySets refuses an A/B state change on a disk with more than
	// two partition sets: "the inactive set" has no meaning there. Errors
	// that carry it also match ErrLayout.
	ErrTooManySets = errors.New("gptprio: the disk has more than two partition sets")
)

// SetParts are the partition numbers of one set.
type SetParts struct {
	Boot, Root, Hash int
}

// Layout is where the partition sets are on a disk.
type Layout struct {
	Sets    []SetParts // one per BOOT partition, in table order: A, B (, C, ...)
	Private int        // partition number of PRIVATE, 0 when there is none
}

// Dual reports whether the disk has exactly two sets: the A/B layout.
func (l Layout) Dual() bool { return len(l.Sets) == 2 }

// Names returns the names of the sets found ("a", "b", ...).
func (l Layout) Names() []string {
	out := make([]string, len(l.Sets))
	for i := range l.Sets {
		out[i] = Set(i).String()
	}
	return out
}

// SetOf returns the set that partition number n belongs to.
func (l Layout) SetOf(n int) (Set, bool) {
	for i, s := range l.Sets {
		if n == s.Boot || n == s.Root || n == s.Hash {
			return Set(i), true
		}
	}
	return 0, false
}

// FindLayout finds the partition sets as Bottlerocket does, by type GUID: set
// A is the first BOOT, ROOT and HASH partition in table order, set B the
// second of each, and so on: there is one set per BOOT partition, because
// the bootloader considers every BOOT partition (see [Next]). A BOOT
// partition without its ROOT and HASH is an error wrapping ErrLayout. A
// disk with more than two sets is reported as it is; the A/B state changes
// refuse it (ErrTooManySets).
func FindLayout(t *Table) (Layout, error) {
	byType := map[GUID][]int{}
	for _, p := range t.Used() {
		byType[p.Type] = append(byType[p.Type], p.Number)
	}
	boots := byType[TypeBoot]
	if len(boots) == 0 {
		return Layout{}, fmt.Errorf("%w: no BOOT partition (type %v)", ErrLayout, TypeBoot)
	}
	var l Layout
	for i := range boots {
		s := SetParts{Boot: boots[i]}
		for _, k := range []struct {
			name string
			typ  GUID
			dst  *int
		}{{"ROOT", TypeRoot, &s.Root}, {"HASH", TypeHash, &s.Hash}} {
			if len(byType[k.typ]) <= i {
				return Layout{}, fmt.Errorf("%w: set %v has BOOT partition %d but no %s partition (type %v)",
					ErrLayout, Set(i), boots[i], k.name, k.typ)
			}
			*k.dst = byType[k.typ][i]
		}
		l.Sets = append(l.Sets, s)
	}
	if p := byType[TypePrivate]; len(p) > 0 {
		l.Private = p[0]
	}
	return l, nil
}
