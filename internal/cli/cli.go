// Package cli holds what the commands share: usage errors, exit codes,
// per-subcommand flag sets with --help, and JSON output. Only cmd/*
// imports it.
package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/pflag"
)

// Exit codes shared by every command; 3 and up are each command's own.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// UsageError is a mistake on the command line: exit status 2.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef makes a UsageError.
func Usagef(format string, a ...any) error { return &UsageError{fmt.Sprintf(format, a...)} }

// ErrHelp says --help was asked for and shown: exit status 0.
var ErrHelp = errors.New("help shown")

// ExitError carries a command's own exit status (3 and up). Quiet errors
// print nothing more: the command already said what it had to.
type ExitError struct {
	Code  int
	Err   error
	Quiet bool
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// Report prints err the way every command does and returns the exit
// status: "prog: message" for usage errors, "prog: cmd: message" otherwise.
func Report(prog, cmd string, err error, stderr io.Writer) int {
	var ue *UsageError
	var ee *ExitError
	switch {
	case err == nil, errors.Is(err, ErrHelp):
		return ExitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "%s: %v\n", prog, err)
		return ExitUsage
	case errors.As(err, &ee):
		if !ee.Quiet {
			fmt.Fprintf(stderr, "%s: %s: %v\n", prog, cmd, err)
		}
		return ee.Code
	default:
		fmt.Fprintf(stderr, "%s: %s: %v\n", prog, cmd, err)
		return ExitFailure
	}
}

// Flags returns a subcommand's flag set and its parser. The parser handles
// --help (printing "Usage: prog name synopsis" and the options to stdout,
// then returning ErrHelp) and, when nargs >= 0, checks the number of
// positional arguments.
func Flags(prog, name, synopsis string, stdout io.Writer) (*pflag.FlagSet, func(args []string, nargs int) error) {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	help := fs.BoolP("help", "h", false, "show this help")
	return fs, func(args []string, nargs int) error {
		if err := fs.Parse(args); err != nil {
			return Usagef("%s: %v (see %s %s --help)", name, err, prog, name)
		}
		if *help {
			fmt.Fprintf(stdout, "Usage: %s %s %s\n\nOptions:\n", prog, name, synopsis)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return ErrHelp
		}
		if nargs >= 0 && fs.NArg() != nargs {
			return Usagef("%s: want %d argument(s), got %d (see %s %s --help)", name, nargs, fs.NArg(), prog, name)
		}
		return nil
	}
}

// WriteJSON prints v as indented JSON.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// Dispatch runs the subcommand named by args[0]: with no arguments it
// prints usage to stderr (exit 2), with -h, --help or help it prints usage
// to stdout (exit 0), and an unknown name is a usage error.
func Dispatch[E any](prog, usage string, args []string, stdout, stderr io.Writer, e E, cmds map[string]func(E, []string) error) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ExitUsage
	}
	var err error
	switch c, ok := cmds[args[0]]; {
	case args[0] == "-h" || args[0] == "--help" || args[0] == "help":
		fmt.Fprint(stdout, usage)
		return ExitOK
	case !ok:
		err = Usagef("unknown command %q (see %s --help)", args[0], prog)
	default:
		err = c(e, args[1:])
	}
	return Report(prog, args[0], err, stderr)
}
