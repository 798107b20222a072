package fleetlock

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// UpdogAppID is updog's application ID for app-specific machine IDs
// (generated once with systemd-id128 new). `systemd-id128 machine-id
// --app-specific=e0ec9f4d104749e5bfbc9c50bc3b033b` prints the ID that
// DefaultID computes on the same machine.
const UpdogAppID = "e0ec9f4d104749e5bfbc9c50bc3b033b"

// ParseID128 parses a 128-bit ID in systemd's two text forms: 32 hex
// digits, or the 36-character UUID form with dashes. Case is ignored.
func ParseID128(s string) ([16]byte, error) {
	var id [16]byte
	switch len(s) {
	case 32:
	case 36:
		if s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
			return id, fmt.Errorf("%w: ID %q: misplaced dashes", ErrInvalid, s)
		}
		s = s[:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	default:
		return id, fmt.Errorf("%w: ID of %d characters: want 32 hex digits or a UUID", ErrInvalid, len(s))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("%w: ID %q: %w", ErrInvalid, s, err)
	}
	return id, nil
}

// ParseMachineID parses the contents of /etc/machine-id: one ID (see
// ParseID128) and an optional newline. An all-zero ID and systemd's
// "uninitialized" placeholder are refused: every unset machine would
// otherwise share one lock ID.
func ParseMachineID(data []byte) ([16]byte, error) {
	s := string(bytes.TrimSuffix(data, []byte("\n")))
	if s == "uninitialized" || s == "" {
		return [16]byte{}, fmt.Errorf("%w: machine ID is not set (%q)", ErrInvalid, s)
	}
	id, err := ParseID128(s)
	if err != nil {
		return id, fmt.Errorf("machine ID: %w", err)
	}
	if id == ([16]byte{}) {
		return id, fmt.Errorf("%w: machine ID is all zeros", ErrInvalid)
	}
	return id, nil
}

// AppSpecific derives an application-specific ID from a machine ID the
// way systemd's sd_id128_get_machine_app_specific does (sd-id128.c,
// get_app_specific): HMAC-SHA256 keyed with the 16 bytes of the machine
// ID over the 16 bytes of the application ID, the first 16 bytes of the
// digest, then the UUID version 4 and DCE variant bits set. Knowing the
// result does not reveal the machine ID.
func AppSpecific(machine, app [16]byte) [16]byte {
	m := hmac.New(sha256.New, machine[:])
	m.Write(app[:])
	var id [16]byte
	copy(id[:], m.Sum(nil))
	id[6] = id[6]&0x0f | 0x40
	id[8] = id[8]&0x3f | 0x80
	return id
}

// MachineAppID returns AppSpecific of the machine ID in machineID (the
// contents of /etc/machine-id, see ParseMachineID) for appID, as 32
// lowercase hex digits: what `systemd-id128 machine-id -a APPID` prints.
func MachineAppID(machineID []byte, appID [16]byte) (string, error) {
	m, err := ParseMachineID(machineID)
	if err != nil {
		return "", err
	}
	id := AppSpecific(m, appID)
	return hex.EncodeToString(id[:]), nil
}

// DefaultID is the FleetLock ID updog sends: MachineAppID of the contents
// of /etc/machine-id with UpdogAppID.
func DefaultID(machineID []byte) (string, error) {
	app, err := ParseID128(UpdogAppID)
	if err != nil {
		panic(err) // a constant
	}
	return MachineAppID(machineID, app)
}
