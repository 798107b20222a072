package signing

import (
	"bytes"
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
	"fmt"
	"os"

	"github.com/secure-systems-lab/go-securesystemslib/cjson"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/updog/updog/internal/safefile"
)

// MinRSABits is the smallest RSA key this package makes or uses.
const MinRSABits = 3072

// ErrKey means a key file or key is unusable.
var ErrKey = errors.New("signing: unusable key")

// KeyType names a kind of key.
type KeyType string

// Key types.
const (
	Ed25519 KeyType = "ed25519"
	ECDSA   KeyType = "ecdsa"
	RSA     KeyType = "rsa"
)

// Generate makes a new private key. bits applies to RSA only (0 means
// MinRSABits).
func Generate(t KeyType, bits int) (crypto.Signer, error) {
	switch t {
	case Ed25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	case ECDSA:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case RSA:
		if bits == 0 {
			bits = MinRSABits
		}
		if bits < MinRSABits {
			return nil, fmt.Errorf("%w: RSA keys must have at least %d bits, not %d", ErrKey, MinRSABits, bits)
		}
		return rsa.GenerateKey(rand.Reader, bits)
	}
	return nil, fmt.Errorf("%w: key type %q (want ed25519, ecdsa or rsa)", ErrKey, t)
}

// MarshalPrivateKey encodes a private key as PEM PKCS#8.
func MarshalPrivateKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// PrivateKeyMode is the mode of private key files, set explicitly whatever
// the umask.
const PrivateKeyMode os.FileMode = 0o600

// WritePrivateKey writes a private key to a new file, mode 0600. It never
// overwrites an existing file.
func WritePrivateKey(path string, k crypto.Signer) error {
	b, err := MarshalPrivateKey(k)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, PrivateKeyMode)
	if err != nil {
		return err
	}
	if err := f.Chmod(PrivateKeyMode); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// ParsePrivateKey reads a private key: PEM PKCS#8 ("PRIVATE KEY"), PEM
// PKCS#1 RSA, PEM SEC 1 EC, or raw PKCS#8 DER (tough's ed25519 key files).
// The error never contains key material.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	der := data
	if block, _ := pem.Decode(data); block != nil {
		der = block.Bytes
		switch block.Type {
		case "RSA PRIVATE KEY":
			k, err := x509.ParsePKCS1PrivateKey(der)
			if err != nil {
				return nil, fmt.Errorf("%w: not a PKCS#1 RSA key", ErrKey)
			}
			return checkPrivate(k)
		case "EC PRIVATE KEY":
			k, err := x509.ParseECPrivateKey(der)
			if err != nil {
				return nil, fmt.Errorf("%w: not a SEC 1 EC key", ErrKey)
			}
			return checkPrivate(k)
		case "PRIVATE KEY":
		default:
			return nil, fmt.Errorf("%w: PEM block %q is not a private key", ErrKey, block.Type)
		}
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		k, err = parseEd25519V2(der)
		if err != nil {
			return nil, fmt.Errorf("%w: not a PKCS#8 private key", ErrKey)
		}
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: %T cannot sign", ErrKey, k)
	}
	return checkPrivate(s)
}

// parseEd25519V2 reads an ed25519 key in PKCS#8 v2 (OneAsymmetricKey with
// the public key attached), the form tough writes: the seed is the OCTET
// STRING inside the privateKey field.
func parseEd25519V2(der []byte) (crypto.PrivateKey, error) {
	// 30 53 | 02 01 01 | 30 05 06 03 2b 65 70 | 04 22 04 20 <32-byte seed> | a1 23 ...
	prefix := []byte{0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20}
	if len(der) < 2+len(prefix)+32 || der[0] != 0x30 || !bytes.Equal(der[2:2+len(prefix)], prefix) {
		return nil, errors.New("not an ed25519 PKCS#8 v2 key")
	}
	seed := der[2+len(prefix) : 2+len(prefix)+32]
	return ed25519.NewKeyFromSeed(seed), nil
}

func checkPrivate(k crypto.Signer) (crypto.Signer, error) {
	switch k := k.(type) {
	case ed25519.PrivateKey:
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: ECDSA keys must be P-256, not %s", ErrKey, k.Curve.Params().Name)
		}
	case *rsa.PrivateKey:
		if k.N.BitLen() < MinRSABits {
			return nil, fmt.Errorf("%w: RSA key of %d bits; at least %d are needed", ErrKey, k.N.BitLen(), MinRSABits)
		}
	default:
		return nil, fmt.Errorf("%w: unsupported key type %T", ErrKey, k)
	}
	return k, nil
}

// LoadPrivateKey reads a private key file (a regular file of at most
// safefile.MaxKey bytes: never a FIFO or a device).
func LoadPrivateKey(path string) (crypto.Signer, error) {
	b, err := safefile.ReadFile(path, safefile.MaxKey)
	if err != nil {
		return nil, err
	}
	k, err := ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// LoadPublicKey reads the TUF public key from a private key file or a PEM
// public key ("PUBLIC KEY") file (regular files of at most safefile.MaxKey
// bytes).
func LoadPublicKey(path string) (*metadata.Key, error) {
	b, err := safefile.ReadFile(path, safefile.MaxKey)
	if err != nil {
		return nil, err
	}
	k, err := ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// ParsePublicKey reads a TUF public key from a PEM public key ("PUBLIC
// KEY", SPKI) or from any private key ParsePrivateKey reads. Only the key
// types this package signs with are accepted.
func ParsePublicKey(data []byte) (*metadata.Key, error) {
	if block, _ := pem.Decode(data); block != nil && block.Type == "PUBLIC KEY" {
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrKey, err)
		}
		if err := checkPublic(pub); err != nil {
			return nil, err
		}
		return TUFKey(pub)
	}
	k, err := ParsePrivateKey(data)
	if err != nil {
		return nil, err
	}
	return TUFKey(k.Public())
}

// checkPublic applies checkPrivate's rules to a public key.
func checkPublic(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case ed25519.PublicKey:
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return fmt.Errorf("%w: ECDSA keys must be P-256, not %s", ErrKey, k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < MinRSABits {
			return fmt.Errorf("%w: RSA key of %d bits; at least %d are needed", ErrKey, k.N.BitLen(), MinRSABits)
		}
	default:
		return fmt.Errorf("%w: unsupported key type %T", ErrKey, pub)
	}
	return nil
}

// TUFKey converts a public key to its TUF form (keytype, scheme, keyval).
func TUFKey(pub crypto.PublicKey) (*metadata.Key, error) {
	k, err := metadata.KeyFromPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	return k, nil
}

// KeyID is the TUF key ID: the hex SHA-256 of the key's canonical JSON.
func KeyID(k *metadata.Key) (string, error) { return k.ID() }

// MarshalPublicKey encodes a public key as PEM SPKI.
func MarshalPublicKey(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// Signer signs TUF metadata with one key.
type Signer interface {
	// Key is the signer's TUF public key.
	Key() *metadata.Key
	// Sign returns the signature of msg (the canonical JSON of a signed
	// part) in the key's scheme.
	Sign(ctx context.Context, msg []byte) ([]byte, error)
}

type localSigner struct {
	key  *metadata.Key
	priv crypto.Signer
}

// NewSigner returns a Signer for a private key held in memory.
func NewSigner(priv crypto.Signer) (Signer, error) {
	if _, err := checkPrivate(priv); err != nil {
		return nil, err
	}
	k, err := TUFKey(priv.Public())
	if err != nil {
		return nil, err
	}
	return &localSigner{key: k, priv: priv}, nil
}

func (s *localSigner) Key() *metadata.Key { return s.key }

func (s *localSigner) Sign(_ context.Context, msg []byte) ([]byte, error) {
	switch k := s.priv.(type) {
	case ed25519.PrivateKey:
		return ed25519.Sign(k, msg), nil
	case *ecdsa.PrivateKey:
		sum := sha256.Sum256(msg)
		return ecdsa.SignASN1(rand.Reader, k, sum[:])
	case *rsa.PrivateKey:
		sum := sha256.Sum256(msg)
		return rsa.SignPSS(rand.Reader, k, crypto.SHA256, sum[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	}
	return nil, fmt.Errorf("%w: %T", ErrKey, s.priv)
}

// SignMetadata signs md's signed part with s, replacing an earlier
// signature by the same key (several people can sign the same file in
// turn).
func SignMetadata[T metadata.Roles](ctx context.Context, md *metadata.Metadata[T], s Signer) error {
	payload, err := cjson.EncodeCanonical(md.Signed)
	if err != nil {
		return err
	}
	id, err := s.Key().ID()
	if err != nil {
		return err
	}
	sig, err := s.Sign(ctx, payload)
	if err != nil {
		return err
	}
	kept := md.Signatures[:0]
	for _, existing := range md.Signatures {
		if existing.KeyID != id {
			kept = append(kept, existing)
		}
	}
	md.Signatures = append(kept, metadata.Signature{KeyID: id, Signature: sig})
	return nil
}
