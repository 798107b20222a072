//go:build !linux

package dm

import "errors"

// ControlPath is the device-mapper control device.
const ControlPath = "/dev/mapper/control"

// Control is an open device-mapper control device (Linux only).
type Control struct{}

// Open fails: device-mapper is Linux's.
func Open(string) (*Control, error) { return nil, errors.ErrUnsupported }

// Close does nothing.
func (c *Control) Close() error { return nil }

// Version fails off Linux.
func (c *Control) Version() ([3]uint32, error) { return [3]uint32{}, errors.ErrUnsupported }

// Create fails off Linux.
func (c *Control) Create(Device) (uint32, uint32, error) { return 0, 0, errors.ErrUnsupported }

// Remove fails off Linux.
func (c *Control) Remove(string) error { return errors.ErrUnsupported }

// Table fails off Linux.
func (c *Control) Table(string) ([]Status, error) { return nil, errors.ErrUnsupported }

// Status fails off Linux.
func (c *Control) Status(string) ([]Status, error) { return nil, errors.ErrUnsupported }
