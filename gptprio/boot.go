package gptprio

import (
	"fmt"
	"slices"
	"strings"
)

// Everything in this file is pure: it takes a table and returns a new one
// (or a decision) without I/O. The caller writes the result with Write.

// Attrs returns the gptprio attributes of a set's BOOT partition.
func Attrs(t *Table, l Layout, s Set) Attr {
	return t.Partitions[l.Sets[s].Boot-1].Attributes
}

func setAttrs(t *Table, l Layout, s Set, a Attr) {
	t.Partitions[l.Sets[s].Boot-1].Attributes = a
}

// Next applies the boot selection rule of GRUB's gptprio.next as Bottlerocket
// patches it, without changing anything: among all BOOT partitions (every
// partition of type TypeBoot, however many there are) whose tries left is
// above zero or that are marked successful, the one with the highest
// priority wins; priority 0 never wins, and on a tie the first in table
// order wins. The result is the winner's set: the i-th BOOT partition in
// table order is set i (A, B, C, ...), as in [FindLayout]. It returns
// ErrNoBootableSet when nothing qualifies, and an error wrapping ErrLayout
// when the disk has no BOOT partition at all.
func Next(t *Table) (Set, error) {
	s, _, err := nextBoot(t)
	return s, err
}

// NextPartition is [Next] that also returns the partition number of the
// chosen BOOT partition.
func NextPartition(t *Table) (Set, int, error) {
	return nextBoot(t)
}

func nextBoot(t *Table, skip ...Set) (Set, int, error) {
	best, bestPart, bestPrio, i := Set(-1), 0, 0, 0
	for _, p := range t.Partitions {
		if p.Type != TypeBoot {
			continue
		}
		a := p.Attributes
		if (a.Tries() > 0 || a.Successful()) && a.Priority() > bestPrio && !slices.Contains(skip, Set(i)) {
			best, bestPart, bestPrio = Set(i), p.Number, a.Priority()
		}
		i++
	}
	switch {
	case i == 0:
		return 0, 0, fmt.Errorf("%w: no BOOT partition (type %v)", ErrLayout, TypeBoot)
	case best < 0:
		return 0, 0, ErrNoBootableSet
	}
	return best, bestPart, nil
}

// Boot does what the bootloader does: it picks the set with Next and, when
// that set has tries left, uses one up. It returns the chosen set, the table
// the bootloader writes before booting it, and whether a try was used
// (when false, nothing needs writing).
func Boot(t *Table) (Set, *Table, bool, error) {
	c, nt, err := BootNext(t)
	if err != nil {
		return 0, nil, false, err
	}
	if nt == nil {
		nt = t.Clone()
	}
	return c.Set, nt, c.TryUsed, nil
}

// Choice is what the bootloader's step chose ([BootNext]).
type Choice struct {
	Set       Set
	Partition int  // the chosen BOOT partition's number
	TryUsed   bool // a try was used up (the set was not marked successful)
	Before    Attr // the partition's attributes before the try was used
}

// BootNext is the bootloader's step as an edit for [Disk.Update] (or
// [Disk.DryRun]), shared by `signpost next` and the boot selector so the
// two can never disagree: it picks the set with [Next] and uses up one of
// its tries ([Boot] is this step). It returns the choice and the table to write,
// nil when nothing changes (the set is marked successful, or has no tries
// left). Disk.Update writes it crash-safely under the disk's lock.
//
// Sets in skip are passed over: the boot selector names a set that failed
// to start in this boot without using a try (a set marked successful),
// which the plain rule would choose again for ever. With every bootable
// set skipped, it returns ErrNoBootableSet.
func BootNext(t *Table, skip ...Set) (Choice, *Table, error) {
	s, n, err := nextBoot(t, skip...)
	if err != nil {
		return Choice{}, nil, err
	}
	c := Choice{Set: s, Partition: n, Before: t.Partitions[n-1].Attributes}
	if c.Before.Tries() == 0 {
		return c, nil, nil
	}
	nt := t.Clone()
	p := &nt.Partitions[n-1]
	p.Attributes = p.Attributes.WithTries(p.Attributes.Tries() - 1)
	c.TryUsed = true
	return c, nt, nil
}

// dual returns the layout of a two-set disk, ErrSingleSet for one set, and
// an error matching ErrLayout and ErrTooManySets for more than two.
func dual(t *Table) (Layout, error) {
	l, err := FindLayout(t)
	if err != nil {
		return l, err
	}
	if err := notTooMany(l); err != nil {
		return l, err
	}
	if !l.Dual() {
		return l, ErrSingleSet
	}
	return l, nil
}

// notTooMany refuses a layout with more than two sets.
func notTooMany(l Layout) error {
	if len(l.Sets) > 2 {
		return fmt.Errorf("%w: %w: it has %d BOOT/ROOT/HASH sets (%s); the A/B state changes work on exactly two",
			ErrLayout, ErrTooManySets, len(l.Sets), strings.Join(l.Names(), ", "))
	}
	return nil
}

func checkSet(s Set) error {
	if s != SetA && s != SetB {
		return fmt.Errorf("gptprio: %v is not a partition set", s)
	}
	return nil
}

// MarkSuccessfulBoot marks the active set as successfully booted and sets
// the "a boot has ever succeeded" bit (57) on the PRIVATE partition.
// Priority and tries are left as they are.
func MarkSuccessfulBoot(t *Table, active Set) (*Table, error) {
	if err := checkSet(active); err != nil {
		return nil, err
	}
	l, err := FindLayout(t)
	if err != nil {
		return nil, err
	}
	if err := notTooMany(l); err != nil {
		return nil, err
	}
	if int(active) >= len(l.Sets) {
		return nil, ErrSingleSet
	}
	if l.Private == 0 {
		return nil, ErrNoPrivate
	}
	nt := t.Clone()
	setAttrs(nt, l, active, Attrs(nt, l, active).WithSuccessful(true))
	p := &nt.Partitions[l.Private-1]
	p.Attributes = p.Attributes.WithBootEverSucceeded(true)
	return nt, nil
}

// ClearInactive zeroes the inactive set's priority, tries and successful
// bits, before new images are written into it.
func ClearInactive(t *Table, active Set) (*Table, error) {
	return editInactive(t, active, func(nt *Table, l Layout, in Set) error {
		setAttrs(nt, l, in, Attrs(nt, l, in).WithPriority(0).WithTries(0).WithSuccessful(false))
		return nil
	})
}

// MarkInactiveValid gives the inactive set tries left (1 in Bottlerocket;
// tries may be 1 to 15) without changing its priority: the images are
// written and verified and may be tried.
func MarkInactiveValid(t *Table, active Set, tries int) (*Table, error) {
	if tries < 1 || tries > MaxTries {
		return nil, fmt.Errorf("gptprio: tries %d is not between 1 and %d", tries, MaxTries)
	}
	return editInactive(t, active, func(nt *Table, l Layout, in Set) error {
		setAttrs(nt, l, in, Attrs(nt, l, in).WithTries(tries))
		return nil
	})
}

// UpgradeToInactive makes the inactive set the next to boot: inactive
// priority 2 and not successful, active priority 1. It is refused with
// ErrInactiveAlreadyMarked when the inactive set already has a priority or
// is marked successful, and with ErrInactiveNotValid when it has no tries
// left.
func UpgradeToInactive(t *Table, active Set) (*Table, error) {
	return editInactive(t, active, func(nt *Table, l Layout, in Set) error {
		a := Attrs(nt, l, in)
		if a.Priority() != 0 || a.Successful() {
			return fmt.Errorf("%w (set %v, partition %d: %v)", ErrInactiveAlreadyMarked, in, l.Sets[in].Boot, a)
		}
		if a.Tries() == 0 {
			return fmt.Errorf("%w (set %v, partition %d: %v)", ErrInactiveNotValid, in, l.Sets[in].Boot, a)
		}
		setAttrs(nt, l, in, a.WithPriority(2).WithSuccessful(false))
		setAttrs(nt, l, active, Attrs(nt, l, active).WithPriority(1))
		return nil
	})
}

// CancelUpgrade reverses UpgradeToInactive: inactive priority 0, active
// priority 2.
func CancelUpgrade(t *Table, active Set) (*Table, error) {
	return editInactive(t, active, func(nt *Table, l Layout, in Set) error {
		setAttrs(nt, l, in, Attrs(nt, l, in).WithPriority(0))
		setAttrs(nt, l, active, Attrs(nt, l, active).WithPriority(2))
		return nil
	})
}

// RollbackToInactive makes the inactive set the next to boot (priority 2,
// active priority 1), refused with ErrInactiveWontBoot unless the inactive
// set would boot (successful, or priority and tries left).
func RollbackToInactive(t *Table, active Set) (*Table, error) {
	return editInactive(t, active, func(nt *Table, l Layout, in Set) error {
		a := Attrs(nt, l, in)
		if !a.WillBoot() {
			return fmt.Errorf("%w (set %v, partition %d: %v)", ErrInactiveWontBoot, in, l.Sets[in].Boot, a)
		}
		setAttrs(nt, l, in, a.WithPriority(2))
		setAttrs(nt, l, active, Attrs(nt, l, active).WithPriority(1))
		return nil
	})
}

// HasBootEverSucceeded reads bit 57 of the PRIVATE partition.
func HasBootEverSucceeded(t *Table) (bool, error) {
	l, err := FindLayout(t)
	if err != nil {
		return false, err
	}
	if l.Private == 0 {
		return false, ErrNoPrivate
	}
	return t.Partitions[l.Private-1].Attributes.BootEverSucceeded(), nil
}

func editInactive(t *Table, active Set, edit func(nt *Table, l Layout, inactive Set) error) (*Table, error) {
	if err := checkSet(active); err != nil {
		return nil, err
	}
	l, err := dual(t)
	if err != nil {
		return nil, err
	}
	nt := t.Clone()
	if err := edit(nt, l, active.Other()); err != nil {
		return nil, err
	}
	return nt, nil
}
