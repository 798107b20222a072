package main

import (
	"fmt"
	"strings"
	"time"
)

// param is one kernel command line parameter.
type param struct {
	key, value string
	hasValue   bool
}

// parseCmdline splits a kernel command line as the kernel's next_arg does:
// parameters are separated by spaces outside double quotes; key=value is
// split at the first '='; a value in double quotes loses them
// (dm-mod.create="root,,,ro,0 8 verity ..."). Everything after a lone
// "--" is for init and is dropped.
func parseCmdline(s string) []param {
	var out []param
	i := 0
	for {
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i >= len(s) {
			return out
		}
		start, inQuote := i, false
		for ; i < len(s); i++ {
			if isSpace(s[i]) && !inQuote {
				break
			}
			if s[i] == '"' {
				inQuote = !inQuote
			}
		}
		tok := s[start:i]
		if tok == "--" {
			return out
		}
		if strings.HasPrefix(tok, `"`) {
			// A quoted parameter: "key=value with spaces".
			tok = strings.TrimSuffix(tok[1:], `"`)
		}
		p := param{key: tok}
		if k, v, ok := strings.Cut(tok, "="); ok {
			p.key, p.value, p.hasValue = k, v, true
			if strings.HasPrefix(p.value, `"`) {
				p.value = strings.TrimSuffix(p.value[1:], `"`)
			}
		}
		out = append(out, p)
	}
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

// cmdline is the parameters bootsel reads. The last of a key wins, as for
// the kernel's own parameters.
type cmdline struct {
	params map[string]param
}

func newCmdline(s string) cmdline {
	c := cmdline{params: map[string]param{}}
	for _, p := range parseCmdline(s) {
		c.params[p.key] = p
	}
	return c
}

func (c cmdline) get(key string) (string, bool) {
	p, ok := c.params[key]
	return p.value, ok && p.hasValue
}

func (c cmdline) has(key string) bool {
	_, ok := c.params[key]
	return ok
}

// Parameters of bootsel's own (on the stage-one kernel's command line).
const (
	// paramDisk names the disk to boot from (vda, nvme0n1): by default
	// the first disk, in name order, whose GPT has BOOT partitions.
	paramDisk = "bootsel.disk"
	// paramTimeout bounds every wait for a device (default 30s).
	paramTimeout = "bootsel.timeout"
)

// DefaultTimeout bounds each wait for a device to appear.
const DefaultTimeout = 30 * time.Second

func (c cmdline) timeout() (time.Duration, error) {
	v, ok := c.get(paramTimeout)
	if !ok {
		return DefaultTimeout, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 || d > time.Hour {
		return 0, fmt.Errorf("%s=%q is not a duration between 0 and 1h", paramTimeout, v)
	}
	return d, nil
}
