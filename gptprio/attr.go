package gptprio

import "fmt"

// Attr is the 64-bit attribute field of a GPT partition entry. Bits 0-47 are
// defined by the UEFI spec and by partition-type owners; updog reads and
// writes only the ChromeOS/Bottlerocket "gptprio" bits and leaves every
// other bit exactly as it found it:
//
//	bits 48-51  priority    (0 = never boot, 15 = highest)
//	bits 52-55  tries left  (decremented by the bootloader on each try)
//	bit  56     successful  (the set has booted and been marked good)
//	bit  57     on the PRIVATE partition only: a boot has ever succeeded
type Attr uint64

const (
	priorityShift    = 48
	triesShift       = 52
	successfulBit    = 56
	bootSucceededBit = 57

	// MaxPriority and MaxTries are the largest values the 4-bit fields hold.
	MaxPriority = 15
	MaxTries    = 15
)

// Priority returns bits 48-51.
func (a Attr) Priority() int { return int(a>>priorityShift) & 0xf }

// Tries returns the tries-left counter, bits 52-55.
func (a Attr) Tries() int { return int(a>>triesShift) & 0xf }

// Successful returns bit 56.
func (a Attr) Successful() bool { return a&(1<<successfulBit) != 0 }

// BootEverSucceeded returns bit 57 (meaningful on the PRIVATE partition).
func (a Attr) BootEverSucceeded() bool { return a&(1<<bootSucceededBit) != 0 }

// WithPriority returns a with the priority set to p. It panics if p is not
// in 0..15: callers validate user input before it gets here.
func (a Attr) WithPriority(p int) Attr { return a.withField(priorityShift, p) }

// WithTries returns a with tries-left set to n. It panics if n is not in
// 0..15.
func (a Attr) WithTries(n int) Attr { return a.withField(triesShift, n) }

// WithSuccessful returns a with bit 56 set to ok.
func (a Attr) WithSuccessful(ok bool) Attr { return a.withBit(successfulBit, ok) }

// WithBootEverSucceeded returns a with bit 57 set to ok.
func (a Attr) WithBootEverSucceeded(ok bool) Attr { return a.withBit(bootSucceededBit, ok) }

// WillBoot reports whether a bootloader could pick a set with these bits
// and expect it to start: it is marked successful, or it has a priority and
// tries left. This is Bottlerocket signpost's will_boot.
func (a Attr) WillBoot() bool {
	return (a.Priority() > 0 && a.Tries() > 0) || a.Successful()
}

func (a Attr) withField(shift uint, v int) Attr {
	if v < 0 || v > 0xf {
		panic(fmt.Sprintf("gptprio: attribute field value %d out of range 0..15", v))
	}
	return a&^(0xf<<shift) | Attr(v)<<shift
}

func (a Attr) withBit(bit uint, on bool) Attr {
	if on {
		return a | 1<<bit
	}
	return a &^ (1 << bit)
}

// String shows the gptprio fields and the raw value.
func (a Attr) String() string {
	return fmt.Sprintf("priority=%d tries=%d successful=%t (0x%016x)", a.Priority(), a.Tries(), a.Successful(), uint64(a))
}

// Describe shows the bits that mean something on a partition of type typ,
// and the raw value: the gptprio fields on a BOOT partition, bit 57 on the
// PRIVATE partition, only the raw value elsewhere. Use it to show a change
// of attributes, so that a change of a bit the generic String does not name
// (bit 57 on PRIVATE) is visible.
func (a Attr) Describe(typ GUID) string {
	switch typ {
	case TypeBoot:
		return a.String()
	case TypePrivate:
		return fmt.Sprintf("boot_ever_succeeded=%t (0x%016x)", a.BootEverSucceeded(), uint64(a))
	}
	return fmt.Sprintf("0x%016x", uint64(a))
}
