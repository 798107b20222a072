package gptprio

import (
	"errors"
	"fmt"
	"strings"
)

// Set names one partition set: A (the first BOOT/ROOT/HASH partitions in
// table order) or B (the second).
type Set int

// The two partition sets.
const (
	SetA Set = 0
	SetB Set = 1
)

func (s Set) String() string {
	switch s {
	case SetA:
		return "a"
	case SetB:
		return "b"
	}
	return fmt.Sprintf("Set(%d)", int(s))
}

// Other returns the other set.
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
	// ErrLayout means the partitions of a set are missing.
	ErrLayout = errors.New("gptprio: not an A/B disk layout")
)

// SetParts are the partition numbers of one set.
type SetParts struct {
	Boot, Root, Hash int
}

// Layout is where the partition sets are on a disk.
type Layout struct {
	Sets    []SetParts // one or two
	Private int        // partition number of PRIVATE, 0 when there is none
}

// Dual reports whether the disk has two sets.
func (l Layout) Dual() bool { return len(l.Sets) == 2 }

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
// second of each. A second BOOT without a second ROOT and HASH is an error
// wrapping ErrLayout.
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
	for i := 0; i < min(len(boots), 2); i++ {
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
