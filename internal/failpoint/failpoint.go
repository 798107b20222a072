//go:build !updog_failpoints

// Package failpoint marks the points of the install where a crash matters
// most (the commit points), so that a test can stop a real updog process
// exactly there and kill it.
//
// In a normal build Hit does nothing and costs nothing. A binary built
// with -tags updog_failpoints reads UPDOG_FAILPOINT, a comma-separated
// sequence of names: once the process has passed every name of it in
// order, the last one stops it with SIGSTOP, and the test that started it
// looks at the disk and kills it. Watching files from outside (inotify)
// cannot do that reliably: the process runs on while the watcher wakes up.
package failpoint

// Enabled reports whether this binary was built with failpoints.
const Enabled = false

// Hit marks the failpoint name.
func Hit(name string) {}
