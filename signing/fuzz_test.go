package signing

import (
	"context"
	"errors"
	"testing"
)

// The seed corpora in testdata/fuzz/ are tough's public test keys
// (targetskey, targetskey-1, snakeoil.pem, snakeoil_2.pem from
// ../shared/testdata/bottlerocket/tough) and their public halves. Run with
// go test -fuzz=FuzzParsePrivateKey ./signing/ (and FuzzParsePublicKey).

// FuzzParsePrivateKey: ParsePrivateKey never panics, refuses with ErrKey,
// and what it accepts signs and has a TUF public key.
func FuzzParsePrivateKey(f *testing.F) {
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParsePrivateKey(data)
		if err != nil {
			if !errors.Is(err, ErrKey) {
				t.Fatalf("an error without ErrKey: %v", err)
			}
			return
		}
		s, err := NewSigner(k)
		if err != nil {
			t.Fatalf("a parsed key makes no signer: %v", err)
		}
		if _, err := s.Sign(context.Background(), []byte("msg")); err != nil {
			t.Fatalf("a parsed key does not sign: %v", err)
		}
	})
}

// FuzzParsePublicKey: ParsePublicKey never panics, refuses with ErrKey,
// and what it accepts has a key ID.
func FuzzParsePublicKey(f *testing.F) {
	f.Add([]byte("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParsePublicKey(data)
		if err != nil {
			if !errors.Is(err, ErrKey) {
				t.Fatalf("an error without ErrKey: %v", err)
			}
			return
		}
		if _, err := k.ID(); err != nil {
			t.Fatalf("no key ID: %v", err)
		}
	})
}
