//go:build !race

package updater

// raceEnabled says the tests run under the race detector.
const raceEnabled = false
