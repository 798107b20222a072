// Package version holds the build's version, set by the linker:
// -ldflags "-X github.com/updog/updog/internal/version.V=...".
package version

// V is the version string; "dev" for an unstamped build.
var V = "dev"
