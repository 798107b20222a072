package signing

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/updog/updog/internal/testutil"
)

// verifyRaw checks sig over msg with the public key itself, in the scheme
// TUF names for it (ed25519, ecdsa-sha2-nistp256, rsassa-pss-sha256).
func verifyRaw(pub crypto.PublicKey, msg, sig []byte) bool {
	sum := sha256.Sum256(msg)
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return ed25519.Verify(k, msg, sig)
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, sum[:], sig)
	case *rsa.PublicKey:
		return rsa.VerifyPSS(k, crypto.SHA256, sum[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) == nil
	}
	return false
}

// TestKeyFilesSignAndVerify: each kind of key file (tough's raw ed25519
// DER, PKCS#1 RSA, SEC 1 EC, PKCS#8 PEM) loads, signs, and the signature
// verifies with the public key: the raw one, and the TUF key read from the
// file and from its exported public PEM, through go-tuf's verifier. A
// flipped bit does not verify.
func TestKeyFilesSignAndVerify(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	ecPKCS8, _ := MarshalPrivateKey(ec)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	edPKCS8, _ := MarshalPrivateKey(ed)
	tough := testutil.Bottlerocket(t, "tough")
	files := map[string]string{
		"tough ed25519 DER (targetskey)":   filepath.Join(tough, "targetskey"),
		"tough ed25519 DER (targetskey-1)": filepath.Join(tough, "targetskey-1"),
		"tough RSA PKCS#1 (snakeoil.pem)":  filepath.Join(tough, "snakeoil.pem"),
		"ECDSA SEC 1":                      write("ec-sec1.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})),
		"ECDSA PKCS#8":                     write("ec.pem", ecPKCS8),
		"ed25519 PKCS#8":                   write("ed.pem", edPKCS8),
	}
	msg := []byte(`{"_type":"root","version":1}`)
	for name, path := range files {
		t.Run(name, func(t *testing.T) {
			priv, err := LoadPrivateKey(path)
			if err != nil {
				t.Fatal(err)
			}
			s, err := NewSigner(priv)
			if err != nil {
				t.Fatal(err)
			}
			sig, err := s.Sign(context.Background(), msg)
			if err != nil {
				t.Fatal(err)
			}
			if !verifyRaw(priv.Public(), msg, sig) {
				t.Fatal("the signature does not verify with the public key")
			}
			bad := append([]byte(nil), sig...)
			bad[len(bad)/2] ^= 1
			if verifyRaw(priv.Public(), msg, bad) {
				t.Fatal("a damaged signature verifies")
			}
			pubPEM, err := MarshalPublicKey(priv.Public())
			if err != nil {
				t.Fatal(err)
			}
			for _, from := range []string{path, write(filepath.Base(path)+".pub", pubPEM)} {
				pub, err := LoadPublicKey(from)
				if err != nil {
					t.Fatal(err)
				}
				root := metadata.Root(time.Now().Add(time.Hour))
				if err := root.Signed.AddKey(pub, metadata.ROOT); err != nil {
					t.Fatal(err)
				}
				if err := SignMetadata(context.Background(), root, s); err != nil {
					t.Fatal(err)
				}
				if err := root.VerifyDelegate(metadata.ROOT, root); err != nil {
					t.Errorf("public key from %s: go-tuf rejects the signature: %v", filepath.Base(from), err)
				}
				root.Signatures[0].Signature[0] ^= 1
				if err := root.VerifyDelegate(metadata.ROOT, root); err == nil {
					t.Errorf("public key from %s: a damaged signature verifies", filepath.Base(from))
				}
			}
		})
	}
}

// TestSnakeoilSignsToughRoot: tough's simple-rsa root lists snakeoil.pem's
// public key; a signature by our signer with that file verifies under the
// key as tough published it.
func TestSnakeoilSignsToughRoot(t *testing.T) {
	tough := testutil.Bottlerocket(t, "tough")
	b, err := os.ReadFile(filepath.Join(tough, "simple-rsa", "root.json"))
	if err != nil {
		t.Fatal(err)
	}
	root, err := metadata.Root().FromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := LoadPrivateKey(filepath.Join(tough, "snakeoil.pem"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSigner(priv)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := s.Key().ID()
	if _, ok := root.Signed.Keys[id]; !ok {
		t.Fatalf("simple-rsa/root.json does not list key %s", id)
	}
	root.Signatures = nil
	if err := SignMetadata(context.Background(), root, s); err != nil {
		t.Fatal(err)
	}
	if err := root.VerifyDelegate(metadata.ROOT, root); err != nil {
		t.Fatalf("tough's root does not accept our signature: %v", err)
	}
}

func TestPublicKeyRefusals(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	b, _ := MarshalPublicKey(p384.Public())
	if _, err := ParsePublicKey(b); !errors.Is(err, ErrKey) {
		t.Errorf("P-384 public key: %v", err)
	}
	if _, err := ParsePublicKey(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")})); !errors.Is(err, ErrKey) {
		t.Errorf("junk public key: %v", err)
	}
	// tough's 2048-bit RSA key is below our minimum.
	if _, err := LoadPublicKey(filepath.Join(testutil.Bottlerocket(t, "tough"), "snakeoil_2.pem")); !errors.Is(err, ErrKey) {
		t.Errorf("RSA 2048: %v", err)
	}
}
