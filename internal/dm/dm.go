// Package dm makes device-mapper devices the way a kernel with dm-init
// would from its dm-mod.create= parameter, for kernels that lack it (and
// build device-mapper as modules): it parses the parameter ([ParseCreate])
// and talks to the device-mapper control device with its ioctls
// (DM_DEV_CREATE, DM_TABLE_LOAD, DM_DEV_SUSPEND to resume, DM_TABLE_STATUS,
// DM_DEV_REMOVE), in Go, without libdevmapper or udev.
//
// What it owns: the dm-mod.create= syntax and the binary layout of struct
// dm_ioctl and struct dm_target_spec (Linux's include/uapi/linux/dm-ioctl.h,
// interface version 4), encoded and decoded by pure functions that are
// tested everywhere; the system calls are in dm_linux.go only.
//
// What it trusts: the kernel's answers are decoded with every offset and
// length checked against the buffer. What it must never do: leave a device
// half made (a Create that fails after DM_DEV_CREATE removes the device).
package dm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Errors.
var (
	// ErrCreateParam means a dm-mod.create= value cannot be parsed.
	ErrCreateParam = errors.New("dm: bad dm-mod.create= parameter")
	// ErrReply means the kernel's answer to an ioctl cannot be decoded.
	ErrReply = errors.New("dm: malformed reply from the kernel")
)

// Limits of the kernel's dm-init, which ParseCreate keeps to.
const (
	MaxDevices = 256
	MaxTargets = 256
	nameLen    = 128 // DM_NAME_LEN
	uuidLen    = 129 // DM_UUID_LEN
	typeLen    = 16  // DM_MAX_TYPE_NAME
)

// Target is one line of a device-mapper table: sectors Start to
// Start+Length of the device are mapped by target Type with Params.
type Target struct {
	Start, Length uint64
	Type          string
	Params        string
}

// String is the target as dmsetup prints it: "<start> <length> <type> <params>".
func (t Target) String() string {
	return strings.TrimSpace(fmt.Sprintf("%d %d %s %s", t.Start, t.Length, t.Type, t.Params))
}

// ParseTarget parses one table line "<start> <length> <type> [<params>]".
func ParseTarget(s string) (Target, error) {
	if strings.ContainsRune(s, 0) {
		return Target{}, fmt.Errorf("%w: table %q holds a NUL", ErrCreateParam, s)
	}
	f := strings.Fields(s)
	if len(f) < 3 {
		return Target{}, fmt.Errorf("%w: table %q: want <start> <length> <type> <params>", ErrCreateParam, s)
	}
	var t Target
	var err error
	if t.Start, err = strconv.ParseUint(f[0], 10, 64); err != nil {
		return Target{}, fmt.Errorf("%w: table %q: start sector %q", ErrCreateParam, s, f[0])
	}
	if t.Length, err = strconv.ParseUint(f[1], 10, 64); err != nil || t.Length == 0 {
		return Target{}, fmt.Errorf("%w: table %q: length %q", ErrCreateParam, s, f[1])
	}
	t.Type = f[2]
	if len(t.Type) >= typeLen {
		return Target{}, fmt.Errorf("%w: table %q: target type %q is longer than %d bytes", ErrCreateParam, s, t.Type, typeLen-1)
	}
	t.Params = strings.Join(f[3:], " ")
	return t, nil
}

// Device is a device to make: what one dm-mod.create= entry says.
type Device struct {
	Name     string
	UUID     string // "" for none
	Minor    int    // -1: any (the kernel picks)
	ReadOnly bool
	Targets  []Target
}

// ParseCreate parses the value of dm-mod.create= as the kernel's dm-init
// does (Documentation/admin-guide/device-mapper/dm-init.rst):
//
//	<name>,<uuid>,<minor>,<flags>,<table>[,<table>+][;<name>,<uuid>,<minor>,<flags>,<table>[,<table>+]+]
//	<flags> is ro or rw; <table> is "<start_sector> <num_sectors> <target_type> <target_args>"
//
// uuid and minor may be empty. As in dm-init, there is no escaping: a ','
// or ';' always separates, and fields are trimmed of spaces. Errors match
// ErrCreateParam.
func ParseCreate(v string) ([]Device, error) {
	var devs []Device
	for i, ds := range strings.Split(v, ";") {
		if strings.TrimSpace(ds) == "" {
			return nil, fmt.Errorf("%w: device %d is empty", ErrCreateParam, i+1)
		}
		if len(devs) == MaxDevices {
			return nil, fmt.Errorf("%w: more than %d devices", ErrCreateParam, MaxDevices)
		}
		f := strings.Split(ds, ",")
		if len(f) < 5 {
			return nil, fmt.Errorf("%w: device %d: want <name>,<uuid>,<minor>,<flags>,<table>", ErrCreateParam, i+1)
		}
		for j := range f {
			f[j] = strings.TrimSpace(f[j])
		}
		d := Device{Name: f[0], UUID: f[1], Minor: -1}
		if err := checkName(d.Name, d.UUID); err != nil {
			return nil, fmt.Errorf("%w: device %d: %w", ErrCreateParam, i+1, err)
		}
		if f[2] != "" {
			m, err := strconv.Atoi(f[2])
			if err != nil || m < 0 || m > 1<<20-1 {
				return nil, fmt.Errorf("%w: device %s: minor %q", ErrCreateParam, d.Name, f[2])
			}
			d.Minor = m
		}
		switch f[3] {
		case "ro":
			d.ReadOnly = true
		case "rw":
		default:
			return nil, fmt.Errorf("%w: device %s: flags %q (want ro or rw)", ErrCreateParam, d.Name, f[3])
		}
		if len(f)-4 > MaxTargets {
			return nil, fmt.Errorf("%w: device %s: more than %d tables", ErrCreateParam, d.Name, MaxTargets)
		}
		for _, ts := range f[4:] {
			t, err := ParseTarget(ts)
			if err != nil {
				return nil, fmt.Errorf("device %s: %w", d.Name, err)
			}
			d.Targets = append(d.Targets, t)
		}
		devs = append(devs, d)
	}
	return devs, nil
}

func checkName(name, uuid string) error {
	switch {
	case name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("name %q", name)
	case len(name) >= nameLen:
		return fmt.Errorf("name %q is longer than %d bytes", name, nameLen-1)
	case len(uuid) >= uuidLen || strings.ContainsRune(uuid, 0):
		return fmt.Errorf("uuid %q", uuid)
	}
	return nil
}

// The ioctl interface (include/uapi/linux/dm-ioctl.h).
const (
	ioctlType    = 0xfd
	headerSize   = 312 // sizeof(struct dm_ioctl)
	specSize     = 40  // sizeof(struct dm_target_spec)
	versionMajor = 4

	cmdVersion     = 0
	cmdDevCreate   = 3
	cmdDevRemove   = 4
	cmdDevSuspend  = 6
	cmdDevStatus   = 7
	cmdTableLoad   = 9
	cmdTableStatus = 12

	flagReadOnly      = 1 << 0
	flagPersistentDev = 1 << 3
	flagStatusTable   = 1 << 4
	flagBufferFull    = 1 << 8
)

var cmdNames = map[uint]string{cmdVersion: "DM_VERSION", cmdDevCreate: "DM_DEV_CREATE", cmdDevRemove: "DM_DEV_REMOVE",
	cmdDevSuspend: "DM_DEV_SUSPEND", cmdDevStatus: "DM_DEV_STATUS", cmdTableLoad: "DM_TABLE_LOAD", cmdTableStatus: "DM_TABLE_STATUS"}

// ioctlNumber is _IOWR(DM_IOCTL, cmd, struct dm_ioctl).
func ioctlNumber(cmd uint) uint {
	return 3<<30 | headerSize<<16 | ioctlType<<8 | cmd
}

// header is the part of struct dm_ioctl this package uses.
type header struct {
	Version     [3]uint32
	DataSize    uint32
	DataStart   uint32
	TargetCount uint32
	OpenCount   int32
	Flags       uint32
	EventNr     uint32
	Dev         uint64
	Name        string
	UUID        string
}

// encode lays out a struct dm_ioctl followed by data in a buffer of at
// least size bytes (the room the kernel may answer in).
func (h *header) encode(data []byte, size int) []byte {
	n := max(headerSize+len(data), size)
	b := make([]byte, n)
	le := binary.LittleEndian // the host's order; dm runs on little-endian machines here
	le.PutUint32(b[0:], versionMajor)
	le.PutUint32(b[4:], h.Version[1])
	le.PutUint32(b[8:], h.Version[2])
	le.PutUint32(b[12:], uint32(n))
	le.PutUint32(b[16:], headerSize)
	le.PutUint32(b[20:], h.TargetCount)
	le.PutUint32(b[28:], h.Flags)
	le.PutUint32(b[32:], h.EventNr)
	le.PutUint64(b[40:], h.Dev)
	copy(b[48:48+nameLen-1], h.Name)
	copy(b[176:176+uuidLen-1], h.UUID)
	copy(b[headerSize:], data)
	return b
}

func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// decodeHeader reads the struct dm_ioctl at the start of a reply.
func decodeHeader(b []byte) (*header, error) {
	if len(b) < headerSize {
		return nil, fmt.Errorf("%w: %d bytes, shorter than struct dm_ioctl", ErrReply, len(b))
	}
	le := binary.LittleEndian
	h := &header{
		Version:     [3]uint32{le.Uint32(b[0:]), le.Uint32(b[4:]), le.Uint32(b[8:])},
		DataSize:    le.Uint32(b[12:]),
		DataStart:   le.Uint32(b[16:]),
		TargetCount: le.Uint32(b[20:]),
		OpenCount:   int32(le.Uint32(b[24:])),
		Flags:       le.Uint32(b[28:]),
		EventNr:     le.Uint32(b[32:]),
		Dev:         le.Uint64(b[40:]),
		Name:        cstring(b[48 : 48+nameLen]),
		UUID:        cstring(b[176 : 176+uuidLen]),
	}
	return h, nil
}

// encodeTargets lays out the dm_target_spec array of DM_TABLE_LOAD: each
// spec, its NUL-terminated parameters, padded to 8 bytes; next is the
// distance from this spec to the next.
func encodeTargets(ts []Target) ([]byte, error) {
	var out []byte
	for _, t := range ts {
		if len(t.Type) >= typeLen || t.Type == "" {
			return nil, fmt.Errorf("dm: target type %q", t.Type)
		}
		if strings.ContainsRune(t.Params, 0) {
			return nil, fmt.Errorf("dm: target parameters hold a NUL")
		}
		n := specSize + len(t.Params) + 1
		n = (n + 7) &^ 7
		s := make([]byte, n)
		le := binary.LittleEndian
		le.PutUint64(s[0:], t.Start)
		le.PutUint64(s[8:], t.Length)
		le.PutUint32(s[20:], uint32(n))
		copy(s[24:24+typeLen-1], t.Type)
		copy(s[specSize:], t.Params)
		out = append(out, s...)
	}
	return out, nil
}

// Status is a target's line of DM_TABLE_STATUS.
type Status struct {
	Target
	// Info is the status (without DM_STATUS_TABLE_FLAG: for verity, "V"
	// for verified so far or "C" after a corrupt block) or, with it, the
	// table's parameters.
	Info string
}

// decodeTargets reads the target specs of a DM_TABLE_STATUS reply: count
// specs from data_start, each next offset relative to the first spec.
func decodeTargets(b []byte, h *header) ([]Status, error) {
	if h.DataSize > uint32(len(b)) || h.DataStart < headerSize || h.DataStart > h.DataSize {
		return nil, fmt.Errorf("%w: data %d..%d in a %d-byte buffer", ErrReply, h.DataStart, h.DataSize, len(b))
	}
	data := b[h.DataStart:h.DataSize]
	if h.TargetCount > MaxTargets*16 {
		return nil, fmt.Errorf("%w: %d targets", ErrReply, h.TargetCount)
	}
	out := make([]Status, 0, h.TargetCount)
	off := 0
	le := binary.LittleEndian
	for i := uint32(0); i < h.TargetCount; i++ {
		if off < 0 || off+specSize > len(data) {
			return nil, fmt.Errorf("%w: target %d at offset %d past the data (%d bytes)", ErrReply, i, off, len(data))
		}
		s := data[off:]
		st := Status{Target: Target{Start: le.Uint64(s[0:]), Length: le.Uint64(s[8:]), Type: cstring(s[24 : 24+typeLen])}}
		end := bytes.IndexByte(s[specSize:], 0)
		if end < 0 {
			return nil, fmt.Errorf("%w: target %d: parameters not NUL-terminated", ErrReply, i)
		}
		st.Info = string(s[specSize : specSize+end])
		out = append(out, st)
		next := int(le.Uint32(s[20:]))
		if i+1 < h.TargetCount && next <= off {
			return nil, fmt.Errorf("%w: target %d: next offset %d does not move forward", ErrReply, i, next)
		}
		off = next
	}
	return out, nil
}
