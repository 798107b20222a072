//go:build !unix

package signing

import "os/exec"

// inOwnGroup: without process groups, cancellation kills the command only.
func inOwnGroup(*exec.Cmd) {}
