package fetch

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

func TestVerifier(t *testing.T) {
	data := []byte("the signed image")
	sum := sha256.Sum256(data)
	good := map[string][]byte{"sha256": sum[:]}
	check := func(r io.Reader, length int64) error {
		v, err := NewVerifier(r, length, good)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, v)
		return err
	}
	if err := check(bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("good data: %v", err)
	}
	if err := check(bytes.NewReader(append(data, 'x')), int64(len(data))); !errors.Is(err, ErrTooLong) {
		t.Errorf("longer: %v", err)
	}
	if err := check(bytes.NewReader(data[:5]), int64(len(data))); !errors.Is(err, ErrTooShort) {
		t.Errorf("shorter: %v", err)
	}
	bad := bytes.Clone(data)
	bad[3] ^= 1
	if err := check(bytes.NewReader(bad), int64(len(data))); !errors.Is(err, ErrHash) {
		t.Errorf("tampered: %v", err)
	}
	if _, err := NewVerifier(bytes.NewReader(data), 1, map[string][]byte{"md5": {1}}); !errors.Is(err, ErrHash) {
		t.Errorf("no usable hash: %v", err)
	}
}

func TestDownloadFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "1.root.json"), []byte("0123456789"), 0o644)
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	defer srv.Close()
	f := New()
	for _, base := range []string{dir, "file://" + dir, srv.URL} {
		b, err := f.DownloadFile(Join(base, "1.root.json"), 10, 0)
		if err != nil || string(b) != "0123456789" {
			t.Errorf("%s: %q %v", base, b, err)
		}
		if _, err := f.DownloadFile(Join(base, "1.root.json"), 9, 0); err == nil {
			t.Errorf("%s: read past the limit", base)
		}
		_, err = f.DownloadFile(Join(base, "2.root.json"), 10, 0)
		var he *metadata.ErrDownloadHTTP
		if !errors.As(err, &he) || he.StatusCode != 404 {
			t.Errorf("%s: missing file: %v", base, err)
		}
	}
}
