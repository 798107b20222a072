package verity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"testing"
	"time"
)

// BenchmarkBuild hashes 256 MiB through the parallel Builder and, in the
// same run, through one sha256 stream (the work a single-threaded tool
// does at the bottom level), and reports the ratio of the two times.
func BenchmarkBuild(b *testing.B) {
	data := randomBytes(256<<20, 5)
	p := DefaultParams()
	p.Salt = []byte("salt")
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	var ours, ref time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := Build(context.Background(), bytes.NewReader(data), int64(len(data)), p); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(start)
		start = time.Now()
		h := sha256.New()
		for off := 0; off < len(data); off += 4096 {
			h.Reset()
			h.Write(p.Salt)
			h.Write(data[off : off+4096])
			h.Sum(nil)
		}
		ref += time.Since(start)
	}
	b.ReportMetric(float64(ours)/float64(ref), "ratio-vs-1-core-sha256")
}
