package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
)

// barProgress draws one bar per image and phase on a terminal (mpb).
type barProgress struct {
	mu   sync.Mutex
	p    *mpb.Progress
	bars map[string]*mpb.Bar
}

func newBarProgress(w io.Writer) *barProgress {
	return &barProgress{p: mpb.New(mpb.WithOutput(w), mpb.WithWidth(40), mpb.WithRefreshRate(150*time.Millisecond)), bars: map[string]*mpb.Bar{}}
}

func (b *barProgress) Start(image, phase string, total int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if old := b.bars[image]; old != nil {
		old.Abort(false)
	}
	name := fmt.Sprintf("%-8s %-4s", phase, image)
	b.bars[image] = b.p.AddBar(total,
		mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR), decor.CountersKibiByte("% .1f / % .1f", decor.WCSyncSpace)),
		mpb.AppendDecorators(decor.Percentage(decor.WCSyncSpace), decor.AverageSpeed(decor.SizeB1024(0), "% .1f", decor.WCSyncSpace)),
		mpb.BarFillerClearOnComplete())
}

func (b *barProgress) Add(image string, n int64) {
	b.mu.Lock()
	bar := b.bars[image]
	b.mu.Unlock()
	if bar != nil {
		bar.IncrInt64(n)
	}
}

func (b *barProgress) Done(image string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	bar := b.bars[image]
	if bar == nil {
		return
	}
	if err != nil {
		bar.Abort(false)
	} else {
		bar.SetTotal(-1, true)
	}
}

// Wait finishes drawing.
func (b *barProgress) Wait() {
	b.mu.Lock()
	for _, bar := range b.bars {
		if !bar.Completed() {
			bar.Abort(false)
		}
	}
	b.mu.Unlock()
	b.p.Wait()
}

// jsonProgress writes JSON lines: one at each start and end of a phase,
// and at least once a second while bytes flow.
type jsonProgress struct {
	mu    sync.Mutex
	w     io.Writer
	state map[string]*phaseState
	stop  chan struct{}
	wg    sync.WaitGroup
	now   func() time.Time
}

type phaseState struct {
	phase        string
	done, total  int64
	start, drawn time.Time
	finished     bool
}

type progressLine struct {
	Event string  `json:"event"`
	Phase string  `json:"phase"`
	Image string  `json:"image"`
	Done  int64   `json:"bytes_done"`
	Total int64   `json:"bytes_total"`
	Rate  float64 `json:"bytes_per_second"`
	Error string  `json:"error,omitempty"`
}

func newJSONProgress(w io.Writer) *jsonProgress {
	j := &jsonProgress{w: w, state: map[string]*phaseState{}, stop: make(chan struct{}), now: time.Now}
	j.wg.Add(1)
	go func() {
		defer j.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-j.stop:
				return
			case <-t.C:
				j.mu.Lock()
				for img, s := range j.state {
					if !s.finished {
						j.emit("progress", img, s, nil)
					}
				}
				j.mu.Unlock()
			}
		}
	}()
	return j
}

func (j *jsonProgress) emit(ev, image string, s *phaseState, err error) {
	now := j.now()
	l := progressLine{Event: ev, Phase: s.phase, Image: image, Done: s.done, Total: s.total}
	if d := now.Sub(s.start).Seconds(); d > 0 {
		l.Rate = float64(s.done) / d
	}
	if err != nil {
		l.Error = err.Error()
	}
	b, _ := json.Marshal(l)
	j.w.Write(append(b, '\n'))
	s.drawn = now
}

func (j *jsonProgress) Start(image, phase string, total int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	s := &phaseState{phase: phase, total: total, start: j.now()}
	j.state[image] = s
	j.emit("start", image, s, nil)
}

func (j *jsonProgress) Add(image string, n int64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if s := j.state[image]; s != nil {
		s.done += n
	}
}

func (j *jsonProgress) Done(image string, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if s := j.state[image]; s != nil {
		s.finished = true
		ev := "done"
		if err != nil {
			ev = "failed"
		}
		j.emit(ev, image, s, err)
	}
}

func (j *jsonProgress) Wait() {
	close(j.stop)
	j.wg.Wait()
}
