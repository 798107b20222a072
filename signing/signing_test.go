package signing

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// TestSignaturesVerifyWithGoTUF signs with each key type and checks the
// signature with go-tuf's verifier, through a root that lists the key.
func TestSignaturesVerifyWithGoTUF(t *testing.T) {
	for _, kt := range []KeyType{Ed25519, ECDSA, RSA} {
		k, err := Generate(kt, 0)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "key.pem")
		if err := WritePrivateKey(path, k); err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(path)
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: key file mode %v, want 0600", kt, fi.Mode().Perm())
		}
		if err := WritePrivateKey(path, k); err == nil {
			t.Errorf("%s: overwrote an existing key file", kt)
		}
		loaded, err := LoadPrivateKey(path)
		if err != nil {
			t.Fatal(err)
		}
		s, err := NewSigner(loaded)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := LoadPublicKey(path)
		if err != nil {
			t.Fatal(err)
		}
		wantID, _ := s.Key().ID()
		if id, _ := pub.ID(); id != wantID {
			t.Errorf("%s: key ID from the file %s, from the signer %s", kt, id, wantID)
		}
		root := metadata.Root(time.Now().Add(time.Hour))
		root.Signed.AddKey(s.Key(), metadata.ROOT)
		if err := SignMetadata(context.Background(), root, s); err != nil {
			t.Fatal(err)
		}
		if err := root.VerifyDelegate(metadata.ROOT, root); err != nil {
			t.Errorf("%s: go-tuf rejects our signature: %v", kt, err)
		}
		// Signing again replaces the signature rather than adding one.
		SignMetadata(context.Background(), root, s)
		if len(root.Signatures) != 1 {
			t.Errorf("%s: %d signatures after signing twice", kt, len(root.Signatures))
		}
	}
}

func TestKeyRefusals(t *testing.T) {
	if _, err := Generate(RSA, 2048); !errors.Is(err, ErrKey) {
		t.Errorf("RSA 2048 generated: %v", err)
	}
	small, _ := rsa.GenerateKey(rand.Reader, 2048)
	der, _ := x509.MarshalPKCS8PrivateKey(small)
	if _, err := ParsePrivateKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); !errors.Is(err, ErrKey) {
		t.Errorf("RSA 2048 loaded: %v", err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	der, _ = x509.MarshalPKCS8PrivateKey(p384)
	if _, err := ParsePrivateKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); !errors.Is(err, ErrKey) {
		t.Errorf("P-384 loaded: %v", err)
	}
	if _, err := ParsePrivateKey([]byte("not a key")); !errors.Is(err, ErrKey) {
		t.Errorf("junk: %v", err)
	}
	if _, err := Generate("dsa", 0); !errors.Is(err, ErrKey) {
		t.Errorf("dsa: %v", err)
	}
}
