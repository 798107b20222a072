package fetch

import (
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
)

// Errors of a Verifier (and of OpenResumable's length checks).
var (
	// ErrTooLong means more bytes arrived than the signed length.
	ErrTooLong = errors.New("fetch: more data than the signed length")
	// ErrTooShort means the data ended before the signed length.
	ErrTooShort = errors.New("fetch: data shorter than the signed length")
	// ErrHash means the data does not match its signed hash.
	ErrHash = errors.New("fetch: hash mismatch")
)

// finishBufSize is the buffer Finish drains with.
const finishBufSize = 64 << 10

// Verifier passes data through while checking it against a signed length
// and hashes. It returns ErrTooLong as soon as a byte past the length
// arrives, and at EOF ErrTooShort or ErrHash instead of io.EOF when the data
// is not exactly what was signed: treat everything read as tentative until
// io.EOF, or until Finish says nil. Every error is sticky.
//
// A consumer that stops before EOF (a decompressor at its end marker) must
// call Finish for the verdict: without it the hash is never compared.
type Verifier struct {
	r       io.Reader
	want    int64
	n       int64
	hashers map[string]hash.Hash
	hashes  map[string][]byte
	err     error
}

// NewVerifier checks r against length and hashes (algorithm name to digest;
// sha256 and sha512 are understood, at least one is required).
func NewVerifier(r io.Reader, length int64, hashes map[string][]byte) (*Verifier, error) {
	v := &Verifier{r: r, want: length, hashers: map[string]hash.Hash{}, hashes: map[string][]byte{}}
	for alg, sum := range hashes {
		switch alg {
		case "sha256":
			v.hashers[alg] = sha256.New()
		case "sha512":
			v.hashers[alg] = sha512.New()
		default:
			continue
		}
		v.hashes[alg] = sum
	}
	if len(v.hashers) == 0 {
		return nil, fmt.Errorf("%w: no sha256 or sha512 hash to check against", ErrHash)
	}
	if length < 0 {
		return nil, fmt.Errorf("%w: negative signed length %d", ErrTooShort, length)
	}
	return v, nil
}

// Read implements io.Reader.
func (v *Verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	// Read one byte past the signed length, to notice a longer stream.
	if room := v.want + 1 - v.n; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := v.r.Read(p)
	if v.n+int64(n) > v.want {
		v.err = fmt.Errorf("%w: %d bytes signed", ErrTooLong, v.want)
		n = int(v.want - v.n)
	}
	for _, h := range v.hashers {
		h.Write(p[:n])
	}
	v.n += int64(n)
	if v.err != nil {
		return n, v.err
	}
	if errors.Is(err, io.EOF) {
		v.err = v.verdict()
		return n, v.err
	}
	if err != nil {
		v.err = err
	}
	return n, err
}

// verdict is the result once the source has ended: io.EOF when exactly the
// signed bytes arrived.
func (v *Verifier) verdict() error {
	if v.n < v.want {
		return fmt.Errorf("%w: got %d of %d bytes", ErrTooShort, v.n, v.want)
	}
	for alg, h := range v.hashers {
		if got := h.Sum(nil); subtle.ConstantTimeCompare(got, v.hashes[alg]) != 1 {
			return fmt.Errorf("%w: %s is %s, signed %s", ErrHash, alg, hex.EncodeToString(got), hex.EncodeToString(v.hashes[alg]))
		}
	}
	return io.EOF
}

// Finish reads whatever the consumer did not (up to the signed length, and
// one byte past it to detect a longer stream), hashes it, and returns the
// verdict: nil only when exactly length bytes arrived and every hash
// matches. drained is how many bytes Finish had to read itself (the caller
// decides whether unread bytes after a compressed stream are an error: the
// updater refuses them as trailing bytes). Calling Finish again returns the
// same verdict with drained 0.
func (v *Verifier) Finish() (drained int64, err error) {
	var buf []byte
	for v.err == nil {
		if buf == nil {
			buf = make([]byte, min(finishBufSize, v.want-v.n+1))
		}
		n, _ := v.Read(buf)
		drained += int64(n)
	}
	if errors.Is(v.err, io.EOF) {
		return drained, nil
	}
	return drained, v.err
}

// Verified reports how many bytes have passed through.
func (v *Verifier) Verified() int64 { return v.n }

// State is the verifier's position and the marshalled state of each hash
// after it (crypto/sha256 and sha512 states marshal), for a checkpoint:
// NewVerifierAt goes on from it.
func (v *Verifier) State() (offset int64, states map[string][]byte, err error) {
	states = map[string][]byte{}
	for alg, h := range v.hashers {
		m, ok := h.(encoding.BinaryMarshaler)
		if !ok {
			return 0, nil, fmt.Errorf("fetch: %s state cannot be saved", alg)
		}
		if states[alg], err = m.MarshalBinary(); err != nil {
			return 0, nil, err
		}
	}
	return v.n, states, nil
}

// NewVerifierAt is NewVerifier for a stream that starts at offset, the
// bytes before it having been hashed into states (from State). r delivers
// the bytes from offset on.
func NewVerifierAt(r io.Reader, length int64, hashes map[string][]byte, offset int64, states map[string][]byte) (*Verifier, error) {
	v, err := NewVerifier(r, length, hashes)
	if err != nil {
		return nil, err
	}
	if offset < 0 || offset > length {
		return nil, fmt.Errorf("fetch: resuming at byte %d of %d", offset, length)
	}
	for alg, h := range v.hashers {
		st, ok := states[alg]
		u, can := h.(encoding.BinaryUnmarshaler)
		if !ok || !can {
			return nil, fmt.Errorf("fetch: no saved %s state to resume from", alg)
		}
		if err := u.UnmarshalBinary(st); err != nil {
			return nil, fmt.Errorf("fetch: saved %s state: %w", alg, err)
		}
	}
	v.n = offset
	return v, nil
}
