package fetch

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"time"
)

// stallReader ends a response whose next byte does not come within d: a
// timer runs while a read waits (and while the headers are awaited), and
// when it fires it cancels the request, which makes the blocked read return;
// that read then reports a *StallError. Time the consumer spends between
// reads does not count: a slow disk is not a stalled server.
type stallReader struct {
	rc      io.ReadCloser
	url     string
	d       time.Duration
	cancel  context.CancelFunc
	timer   *time.Timer
	stalled atomic.Bool
}

func newStallReader(url string, d time.Duration, cancel context.CancelFunc) *stallReader {
	s := &stallReader{url: url, d: d, cancel: cancel}
	if d > 0 {
		s.timer = time.AfterFunc(time.Hour, func() {
			s.stalled.Store(true)
			cancel()
		})
		s.timer.Stop()
	}
	return s
}

func (s *stallReader) arm() {
	if s.timer != nil {
		s.timer.Reset(s.d)
	}
}

func (s *stallReader) disarm() {
	if s.timer != nil {
		s.timer.Stop()
	}
}

func (s *stallReader) stop() { s.disarm() }

func (s *stallReader) Read(p []byte) (int, error) {
	if s.stalled.Load() {
		return 0, &StallError{URL: s.url, After: s.d}
	}
	s.arm()
	n, err := s.rc.Read(p)
	s.disarm()
	if err != nil && !errors.Is(err, io.EOF) && s.stalled.Load() {
		return n, &StallError{URL: s.url, After: s.d}
	}
	return n, err
}

func (s *stallReader) Close() error {
	s.stop()
	s.cancel()
	return s.rc.Close()
}
