package cli

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// progressEvery is how often a progress line is redrawn.
const progressEvery = 200 * time.Millisecond

// IsTerminal reports whether f looks like a terminal (a character device).
func IsTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Progress draws one self-erasing line of progress ("name  42% 430 MiB /
// 1.0 GiB  610 MiB/s") on a terminal. A nil *Progress does nothing, so
// callers need no checks when output is not a terminal.
type Progress struct {
	w     io.Writer
	mu    sync.Mutex
	name  string
	total int64
	done  int64
	start time.Time
	drawn time.Time
}

// NewProgress returns a Progress writing to w, or nil when w is not a
// terminal (progress is for people; logs and pipes get the final lines).
func NewProgress(w *os.File) *Progress {
	if !IsTerminal(w) {
		return nil
	}
	return &Progress{w: w}
}

// Start begins a new item.
func (p *Progress) Start(name string, total int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.name, p.total, p.done, p.start, p.drawn = name, total, 0, time.Now(), time.Time{}
}

// Add counts n more bytes.
func (p *Progress) Add(n int) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += int64(n)
	if now := time.Now(); now.Sub(p.drawn) >= progressEvery {
		p.drawn = now
		p.draw(now)
	}
}

// Finish erases the line.
func (p *Progress) Finish() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprint(p.w, "\r\033[K")
}

func (p *Progress) draw(now time.Time) {
	rate := float64(p.done) / max(now.Sub(p.start).Seconds(), 1e-3)
	pct := ""
	if p.total > 0 {
		pct = fmt.Sprintf("%3d%% ", p.done*100/p.total)
	}
	fmt.Fprintf(p.w, "\r\033[K%s  %s%s / %s  %s/s", p.name, pct, size(p.done), size(p.total), size(int64(rate)))
}

func size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// ReaderAt counts what is read through r.
func (p *Progress) ReaderAt(r io.ReaderAt) io.ReaderAt {
	if p == nil {
		return r
	}
	return progressReaderAt{r, p}
}

type progressReaderAt struct {
	r io.ReaderAt
	p *Progress
}

func (pr progressReaderAt) ReadAt(b []byte, off int64) (int, error) {
	n, err := pr.r.ReadAt(b, off)
	pr.p.Add(n)
	return n, err
}
