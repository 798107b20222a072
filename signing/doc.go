// Package signing makes, stores and uses the keys that sign TUF metadata.
//
// Keys are ed25519, ECDSA P-256 or RSA of 3072 bits or more. Private keys
// are stored as PEM PKCS#8 files written 0600 and never logged. RSA signs
// with RSA-PSS, salt length equal to the hash length, which is what go-tuf
// and tough verify; ECDSA signatures are ASN.1 DER over SHA-256; ed25519
// signs the message itself.
//
// A key need not live on this machine: a Signer is a TUF public key and a
// function that signs bytes, and CommandSigner runs an external command
// (a hardware token's tool, a cloud key service's CLI) that reads the bytes
// on stdin and prints the signature, so the repository code never changes
// for a new kind of key store. The command is bounded: at most
// MaxSignatureOutput bytes of output, DefaultCommandTimeout (or its own
// Timeout), stopped with its whole process group on a timeout, a flood or
// a cancelled context, and its stderr (the end of it) in the error.
//
// Key files are read through internal/safefile: a FIFO, a directory or a
// device given as a key is refused, never read.
//
// This package is for publishers. The on-device updater never links it.
package signing
