// Package waves decides when a host may take a staged-rollout update.
//
// A release reaches the fleet in waves. A wave policy (Bottlerocket's
// `[[waves]]` TOML files: start_after and fleet_percentage) started at a
// time T becomes a Schedule: wave i opens at its start time to the hosts
// whose seed (a random number 0..2047 each host keeps) lies in the wave's
// seed range. The manifest stores a schedule as Bottlerocket does, a map
// from each wave's first seed to its start time ([Policy.Schedule] produces
// exactly the keys Bottlerocket's tools produce).
//
// Where this package differs from Bottlerocket, on purpose:
//   - Bottlerocket places a host within its wave by its absolute seed, so
//     most of a later wave's hosts become eligible at the same instant, at
//     the wave's end (under default-waves 40 % of the fleet at T+6d), and
//     seed 0 is eligible before the first wave opens. Here each wave's hosts
//     are spread evenly from the wave's start to the next wave's start, and
//     nobody is eligible before the first wave opens ([Eligible]).
//   - The last wave is spread over a window as long as the one before it,
//     unless the schedule has an end (a seed key of 2048, written when the
//     policy sets last_wave_duration).
//   - Hosts that share a seed are spread further across their seed's slice
//     of the window by a persistent random host ID, so no crowd of hosts
//     wakes at one instant.
//   - A rollout can be paused and resumed: while paused nobody new becomes
//     eligible, and on resume the rest of the schedule shifts by the pause.
//
// Everything here is pure: time is a parameter, never read from the clock.
// Every time a schedule holds lies within the years 0000 to 9999 (what RFC
// 3339, and so a manifest, can write), and offsets that would overflow a
// time.Duration are errors, never values that wrapped around.
// The package imports only the standard library and, to read policy files,
// github.com/BurntSushi/toml.
package waves
