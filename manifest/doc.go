// Package manifest reads, validates, edits and writes manifest.json, the
// TUF target that lists every release with its images and rollout schedule,
// in Bottlerocket's schema:
//
//	{"updates": [{"variant", "arch", "version", "max_version",
//	              "waves": {"<first seed>": "<RFC 3339 time>", ...},
//	              "images": {"boot", "root", "hash"}}],
//	 "migrations": {"(from, to)": ["name", ...]}}
//
// Our additions are optional, so Bottlerocket's manifests stay valid and
// Bottlerocket's updog reads ours: images.sizes (uncompressed bytes of
// each image), images.verity (the dm-verity root hash, salt and geometry of
// the root image, so a host can check what it wrote before it switches
// sets) and an update's "pauses" (rollout pauses). Unknown fields, at every
// level, are kept and written back.
//
// Validation ([Manifest.Validate]) checks what a host will trust: variant
// and arch are safe identifiers, image names are plain file names (a host
// fetches and writes them), image sizes are sane, the dm-verity parameters
// are ones dm-verity accepts, and every time lies in the years 0000 to 9999
// (Encode refuses to write a time it could not read back).
//
// Choosing the update for a host ([Manifest.Choose]) is a pure function.
// The package does plain encoding/json and validation; it knows nothing of
// TUF, and it never reads the clock.
package manifest
