package waves_test

import (
	"fmt"
	"time"

	"github.com/updog/updog/waves"
)

func ExamplePolicy_Schedule() {
	p, _ := waves.ParsePolicy([]byte(`
[[waves]]
start_after = '1 hour'
fleet_percentage = 1

[[waves]]
start_after = '1 day'
fleet_percentage = 100
`))
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	s, _ := p.Schedule(start)
	for _, w := range s.Describe() {
		fmt.Printf("wave %d: seeds %d-%d from %s to %s (%.1f%%)\n", w.Wave, w.FirstSeed, w.LastSeed,
			w.Start.Format("Jan 2 15:04"), w.End.Format("Jan 2 15:04"), w.Share)
	}
	// Output:
	// wave 1: seeds 0-19 from Jan 1 01:00 to Jan 2 00:00 (1.0%)
	// wave 2: seeds 20-2047 from Jan 2 00:00 to Jan 2 23:00 (99.0%)
}
