package updater

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/updog/updog/repo"
)

// benchImage is real binaries and libraries (compresses like an OS image).
func benchImage(b *testing.B, n int) []byte {
	b.Helper()
	out := make([]byte, 0, n)
	for _, dir := range []string{"/usr/lib/x86_64-linux-gnu", "/usr/bin", "/usr/lib"} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if len(out) >= n {
				return out[:n]
			}
			if !e.Type().IsRegular() {
				continue
			}
			d, err := os.ReadFile(dir + "/" + e.Name())
			if err == nil {
				out = append(out, d...)
			}
		}
	}
	for len(out) < n {
		out = append(out, out[:min(len(out), n-len(out))]...)
	}
	return out[:n]
}

// BenchmarkZstdFramesDecode compares decoding imgbuild's 8 MiB frames with
// the frame-parallel source against one streaming klauspost reader.
func BenchmarkZstdFramesDecode(b *testing.B) {
	data := benchImage(b, 256<<20)
	framed := zstdFrames(b, data, 8<<20)
	b.Run("frames-parallel", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			s, err := openSource(context.Background(), bytes.NewReader(framed), "", 0, 0, 2, nil)
			if err != nil {
				b.Fatal(err)
			}
			for {
				pc, err := s.src.next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					b.Fatal(err)
				}
				pc.done()
			}
			s.src.close()
		}
	})
	b.Run("one-reader", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		for i := 0; i < b.N; i++ {
			d, _ := zstd.NewReader(bytes.NewReader(framed))
			io.Copy(io.Discard, d)
			d.Close()
		}
	})
}

// BenchmarkInstallFramed installs a 256 MiB root image (8 MiB zstd
// frames) from a loopback server into a disk image file, every check on.
func BenchmarkInstallFramed(b *testing.B) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		f := newFixtureRoot(b, 264)
		f.frames = 8 << 20
		f.rootBytes = 256 << 20
		f.rootData = benchImage(b, 256<<20)
		f.addRelease("1.1.0", nil)
		f.publish(repo.Options{})
		u := f.updater()
		b.StartTimer()
		if _, err := u.Update(context.Background(), UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		u.Unlock()
	}
}

// BenchmarkInstallSingleFrame is BenchmarkInstallFramed with one zstd
// frame (zstd -T0's format): streamed, no parallel decoding.
func BenchmarkInstallSingleFrame(b *testing.B) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		f := newFixtureRoot(b, 264)
		f.rootBytes = 256 << 20
		f.rootData = benchImage(b, 256<<20)
		f.addRelease("1.1.0", nil)
		f.publish(repo.Options{})
		u := f.updater()
		b.StartTimer()
		if _, err := u.Update(context.Background(), UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		u.Unlock()
	}
}
