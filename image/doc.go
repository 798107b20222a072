// Package image builds the disks and artifacts that updog installs: GPT disk
// images laid out as Bottlerocket lays them out, and (in later work) the
// compressed boot, root and hash images of an update.
//
// It trusts its inputs (they come from the release engineer's build) but
// validates every size against the plan before writing. It must never
// import the updater or the repository code.
package image
