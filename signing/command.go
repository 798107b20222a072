package signing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Limits of an external signing command.
const (
	// MaxSignatureOutput bounds what a signing command may print on
	// stdout: a signature is a few hundred bytes (RSA-4096: 512), so 64 KiB
	// is generous, and a command printing more is stopped.
	MaxSignatureOutput = 64 << 10
	// MaxSignerStderr is how much of a signing command's stderr is kept
	// (the end of it) for the error message; the rest is discarded.
	MaxSignerStderr = 4 << 10
	// DefaultCommandTimeout bounds one run of a signing command. A
	// hardware token waiting for a touch needs seconds, not minutes.
	DefaultCommandTimeout = 60 * time.Second
	// commandWaitDelay bounds the wait for the command's output pipes once
	// it was stopped (a grandchild that escaped the process group may hold
	// them).
	commandWaitDelay = 5 * time.Second
)

// Errors of a CommandSigner. Each comes wrapped in a *CommandError.
var (
	// ErrSignerOutput means the command printed more than
	// MaxSignatureOutput bytes.
	ErrSignerOutput = errors.New("signing: the signing command printed more than a signature")
	// ErrSignerTimeout means the command did not finish within its
	// timeout.
	ErrSignerTimeout = errors.New("signing: the signing command timed out")
	// ErrSignerFailed means the command failed or printed nothing.
	ErrSignerFailed = errors.New("signing: the signing command failed")
)

// CommandError is a failed run of a signing command, with the end of what
// it printed on stderr.
type CommandError struct {
	Command string
	Err     error
	Stderr  string
}

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("signing command %s: %v", e.Command, e.Err)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

func (e *CommandError) Unwrap() error { return e.Err }

// CommandSigner signs by running an external command: the bytes to sign go
// to its stdin, and it prints the raw signature on stdout. Public is the
// key's public half (the command never reveals it).
//
// The command runs in its own process group, which is killed when it runs
// longer than Timeout, prints more than MaxSignatureOutput bytes, or ctx is
// done; its stderr (the last MaxSignerStderr bytes) goes into the error.
type CommandSigner struct {
	Public *metadata.Key
	Argv   []string
	// Timeout bounds one run (0 means DefaultCommandTimeout).
	Timeout time.Duration
}

// Key implements Signer.
func (c *CommandSigner) Key() *metadata.Key { return c.Public }

// Sign implements Signer.
func (c *CommandSigner) Sign(ctx context.Context, msg []byte) ([]byte, error) {
	if len(c.Argv) == 0 {
		return nil, fmt.Errorf("%w: no signing command", ErrKey)
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultCommandTimeout
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(rctx, c.Argv[0], c.Argv[1:]...)
	cmd.Stdin = bytes.NewReader(msg)
	out := &limitedBuffer{limit: MaxSignatureOutput, overflow: cancel}
	errb := &tailBuffer{limit: MaxSignerStderr}
	cmd.Stdout, cmd.Stderr = out, errb
	inOwnGroup(cmd)
	cmd.WaitDelay = commandWaitDelay
	err := cmd.Run()
	fail := func(err error) error {
		return &CommandError{Command: c.Argv[0], Err: err, Stderr: strings.TrimSpace(errb.String())}
	}
	switch {
	case out.overflowed:
		return nil, fail(fmt.Errorf("%w (more than %d bytes)", ErrSignerOutput, MaxSignatureOutput))
	case ctx.Err() != nil:
		return nil, fail(ctx.Err())
	case errors.Is(rctx.Err(), context.DeadlineExceeded):
		return nil, fail(fmt.Errorf("%w after %s", ErrSignerTimeout, timeout))
	case err != nil:
		return nil, fail(fmt.Errorf("%w: %w", ErrSignerFailed, err))
	case len(out.buf) == 0:
		return nil, fail(fmt.Errorf("%w: it printed no signature", ErrSignerFailed))
	}
	return out.buf, nil
}

// limitedBuffer keeps up to limit bytes; past that it calls overflow (which
// stops the command) and refuses to write. It has only Write (no ReadFrom,
// which io.Copy would use to bypass the limit).
type limitedBuffer struct {
	buf        []byte
	limit      int
	overflow   func()
	overflowed bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.overflowed || len(b.buf)+len(p) > b.limit {
		if !b.overflowed {
			b.overflowed = true
			b.overflow()
		}
		return 0, ErrSignerOutput
	}
	b.buf = append(b.buf, p...)
	return len(p), nil
}

// tailBuffer keeps the last limit bytes written to it.
type tailBuffer struct {
	buf     []byte
	limit   int
	dropped bool
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > 2*t.limit {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.limit:]...)
		t.dropped = true
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	b := t.buf
	if len(b) > t.limit {
		b = b[len(b)-t.limit:]
		t.dropped = true
	}
	if t.dropped {
		return "..." + string(b)
	}
	return string(b)
}
