package verity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"sync"
	"testing"
	"time"
)

// benchData is the 256 MiB that BenchmarkBuild and BenchmarkChecker hash,
// with its hash device, made once.
var benchData = sync.OnceValues(func() ([]byte, *memWriterAt) {
	data := randomBytes(256<<20, 5)
	hash := &memWriterAt{}
	if _, err := Format(context.Background(), bytes.NewReader(data), int64(len(data)), hash, benchParams()); err != nil {
		panic(err)
	}
	return data, hash
})

func benchParams() Params {
	p := DefaultParams()
	p.Salt = []byte("salt")
	return p
}

// BenchmarkBuild hashes 256 MiB through the parallel Builder (its MB/s)
// and, outside the timer, through one sha256 stream (the work a
// single-threaded tool does at the bottom level), and reports the ratio of
// the two times.
func BenchmarkBuild(b *testing.B) {
	data, _ := benchData()
	p := benchParams()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	var ours, ref time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := Build(context.Background(), bytes.NewReader(data), int64(len(data)), p); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(start)
		b.StopTimer()
		start = time.Now()
		h := sha256.New()
		for off := 0; off < len(data); off += 4096 {
			h.Reset()
			h.Write(p.Salt)
			h.Write(data[off : off+4096])
			h.Sum(nil)
		}
		ref += time.Since(start)
		b.StartTimer()
	}
	b.ReportMetric(float64(ours)/float64(ref), "ratio-vs-1-core-sha256")
}

// BenchmarkChecker checks the same 256 MiB as BenchmarkBuild against its
// hash device through a Checker (its MB/s), and times Build on it outside
// the timer: ratio-vs-build is the Checker's time over Build's (1 = as
// fast).
func BenchmarkChecker(b *testing.B) {
	data, hash := benchData()
	p := benchParams()
	tr, err := Build(context.Background(), bytes.NewReader(data), int64(len(data)), p)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	var ours, build time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		c, err := NewChecker(context.Background(), bytes.NewReader(hash.b), tr.Params, tr.RootHash)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.ReadFrom(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
		if err := c.Close(); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(start)
		b.StopTimer()
		start = time.Now()
		if _, err := Build(context.Background(), bytes.NewReader(data), int64(len(data)), p); err != nil {
			b.Fatal(err)
		}
		build += time.Since(start)
		b.StartTimer()
	}
	b.ReportMetric(float64(ours)/float64(build), "ratio-vs-build")
}
