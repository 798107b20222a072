// Package plan is what the VM test and its guest's init (vmtest/guestinit)
// share: the plan the test puts on the guest's second disk, saying what
// the guest does on each boot of a phase, and the events the guest writes
// back on its serial port, one "UPDOGTEST {json}" line each.
package plan

// FileName is the plan's name at the top of the second disk.
const FileName = "plan.json"

// Prefix starts every protocol line.
const Prefix = "UPDOGTEST "

// Plan is one phase: one QEMU run, several guest boots.
type Plan struct {
	// Phase names the phase; the guest counts its boots per phase.
	Phase string `json:"phase"`
	// SkipMarkGood leaves out the `updog mark-good` the guest runs first
	// on every boot (as a host's mark-good unit would).
	SkipMarkGood bool `json:"skip_mark_good,omitempty"`
	// Boots are the steps of the guest's first, second, ... boot of the
	// phase that reach its init (a boot that fails earlier is not
	// counted).
	Boots []Boot `json:"boots"`
}

// Boot is what the guest does on one boot, after mark-good.
type Boot struct {
	Steps []Step `json:"steps"`
	// Then is what it does at the end: ActionPowerOff (the default) or
	// ActionReboot.
	Then string `json:"then,omitempty"`
}

// Step is a command to run, or a byte to flip.
type Step struct {
	Name string   `json:"name"`
	Cmd  []string `json:"cmd,omitempty"`
	Flip *Flip    `json:"flip,omitempty"`
}

// Flip flips (xor 0xff) the byte at Offset of a set's root or hash
// partition: media corruption.
type Flip struct {
	Set    string `json:"set"`  // "a" or "b"
	Part   string `json:"part"` // "root" or "hash"
	Offset int64  `json:"offset"`
}

// Actions at the end of a boot.
const (
	ActionPowerOff = "poweroff"
	ActionReboot   = "reboot"
)

// Event kinds.
const (
	EventBoot  = "boot"  // the guest's init started: what booted
	EventStep  = "step"  // a step ran
	EventEnd   = "end"   // the guest powers off or restarts (Name)
	EventError = "error" // the test's setup is broken
)

// Event is one protocol line.
type Event struct {
	Event  string  `json:"event"`
	Name   string  `json:"name,omitempty"`
	Uptime float64 `json:"uptime"`

	// Boot events.
	Boot        int      `json:"boot,omitempty"`
	Set         string   `json:"set,omitempty"`     // the active set, as updog status found it
	Version     string   `json:"version,omitempty"` // the running release
	DMTable     []string `json:"dm_table,omitempty"`
	DMStatus    []string `json:"dm_status,omitempty"`
	RootDevice  string   `json:"root_device,omitempty"`
	RootBacking string   `json:"root_backing,omitempty"`
	Cmdline     string   `json:"cmdline,omitempty"`
	Firmware    string   `json:"firmware,omitempty"` // "uefi" when /sys/firmware/efi exists, else "bios"

	// Step events.
	Cmd    []string `json:"cmd,omitempty"`
	Exit   int      `json:"exit"`
	Stdout string   `json:"stdout,omitempty"`
	Stderr string   `json:"stderr,omitempty"`
	Error  string   `json:"error,omitempty"`
}
