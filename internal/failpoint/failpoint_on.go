//go:build updog_failpoints

package failpoint

import (
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
)

// Enabled reports whether this binary was built with failpoints.
const Enabled = true

var (
	mu   sync.Mutex
	seq  = parse(os.Getenv("UPDOG_FAILPOINT"))
	next int
)

func parse(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// Hit advances the sequence when name is its next entry; past the last
// one, the process stops itself (SIGSTOP) and stays stopped until it is
// continued or killed.
func Hit(name string) {
	mu.Lock()
	defer mu.Unlock()
	if next >= len(seq) || seq[next] != name {
		return
	}
	next++
	if next == len(seq) {
		// To this thread: a SIGSTOP sent to the process goes to its main
		// thread, and this one would run on (a table write further, the
		// campaign test found) until the group stop reached it.
		runtime.LockOSThread()
		syscall.Tgkill(os.Getpid(), syscall.Gettid(), syscall.SIGSTOP)
		runtime.UnlockOSThread()
	}
}
