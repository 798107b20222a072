package waves

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/updog/updog/internal/testutil"
)

var policies = []string{"default-waves", "accelerated-waves", "ohno", "slow-roll", "updog-test-default_waves"}

func loadPolicy(t testing.TB, name string) *Policy {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(testutil.Bottlerocket(t, "waves"), name+".toml"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePolicy(raw)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return p
}

// TestScheduleKeysMatchBottlerocket compares the schedule made from each
// policy with the manifest waves Bottlerocket's set_waves writes.
func TestScheduleKeysMatchBottlerocket(t *testing.T) {
	for _, name := range policies[:4] {
		raw, err := os.ReadFile(filepath.Join(testutil.Bottlerocket(t, "waves"), name+".bottlerocket-ready-offsets.json"))
		if err != nil {
			t.Fatal(err)
		}
		var want struct {
			StartAt time.Time         `json:"start_at"`
			Waves   map[string]string `json:"manifest_waves"`
		}
		if err := json.Unmarshal(raw, &want); err != nil {
			t.Fatal(err)
		}
		s, err := loadPolicy(t, name).Schedule(want.StartAt)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, w := range s.Waves {
			got[strconv.Itoa(int(w.Seed))] = w.Start.Format(time.RFC3339)
		}
		if fmt.Sprint(got) != fmt.Sprint(want.Waves) {
			t.Errorf("%s:\n got %v\nwant %v", name, got, want.Waves)
		}
	}
	// The documented figures for default-waves.
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	s, _ := loadPolicy(t, "default-waves").Schedule(start)
	wantSeeds := []uint32{0, 20, 102, 307, 819, 1228, 1843}
	wantAfter := []time.Duration{time.Hour, 4 * time.Hour, 24 * time.Hour, 48 * time.Hour, 96 * time.Hour, 120 * time.Hour, 144 * time.Hour}
	for i, w := range s.Waves {
		if w.Seed != wantSeeds[i] || w.Start.Sub(start) != wantAfter[i] {
			t.Errorf("wave %d: seed %d at +%v", i, w.Seed, w.Start.Sub(start))
		}
	}
}

func hostsFor(n int, seed uint64) []Host {
	r := rand.New(rand.NewPCG(seed, 11))
	hosts := make([]Host, n)
	for i := range hosts {
		hosts[i].Seed = uint32(r.IntN(MaxSeed))
		for j := range hosts[i].ID {
			hosts[i].ID[j] = byte(r.Uint32())
		}
	}
	return hosts
}

// TestFleetSimulation lays 100,000 simulated hosts on every policy: at each
// wave's start the share of the fleet already eligible is the cumulative
// percentage of the waves before it (within 1 % of the fleet), nobody is
// eligible before the first wave, everybody is by the end, and under
// default-waves no minute releases more than 0.1 % of the fleet.
func TestFleetSimulation(t *testing.T) {
	hosts := hostsFor(100_000, 1)
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, name := range policies {
		p := loadPolicy(t, name)
		s, err := p.Schedule(start)
		if err != nil {
			t.Fatal(err)
		}
		at := make([]time.Time, len(hosts))
		for i, h := range hosts {
			d := Eligible(h, s, start)
			at[i] = d.EligibleAt
		}
		eligibleAt := func(now time.Time) float64 {
			n := 0
			for _, a := range at {
				if !a.After(now) {
					n++
				}
			}
			return 100 * float64(n) / float64(len(hosts))
		}
		prevPct := 0
		for i, w := range p.Waves {
			got := eligibleAt(s.Waves[i].Start)
			if got < float64(prevPct)-1 || got > float64(prevPct)+1 {
				t.Errorf("%s: at the start of wave %d, %.2f %% eligible, want %d %% ± 1", name, i+1, got, prevPct)
			}
			prevPct = w.FleetPercentage
		}
		if got := eligibleAt(s.Waves[0].Start.Add(-time.Nanosecond)); got != 0 {
			t.Errorf("%s: %.3f %% eligible before the first wave opens", name, got)
		}
		last := s.Describe()[len(s.Describe())-1]
		if got := eligibleAt(last.End); got != 100 {
			t.Errorf("%s: %.3f %% eligible at the end of the last wave", name, got)
		}
		if name == "default-waves" {
			perMinute := map[int64]int{}
			worst := 0
			for _, a := range at {
				m := a.Unix() / 60
				perMinute[m]++
				worst = max(worst, perMinute[m])
			}
			if share := 100 * float64(worst) / float64(len(hosts)); share > 0.1 {
				t.Errorf("default-waves: a minute releases %.3f %% of the fleet", share)
			} else {
				t.Logf("default-waves: the busiest minute releases %.4f %% of the fleet", share)
			}
		}
	}
}

// TestBottlerocketCrowds measures, from Bottlerocket's own eligibility
// offsets, the crowds this package avoids.
func TestBottlerocketCrowds(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(testutil.Bottlerocket(t, "waves"), "default-waves.bottlerocket-ready-offsets.json"))
	if err != nil {
		t.Fatal(err)
	}
	var br struct {
		Offsets []*float64 `json:"ready_offset_seconds_by_seed"`
	}
	json.Unmarshal(raw, &br)
	same := map[float64]int{}
	for _, o := range br.Offsets {
		if o != nil {
			same[*o]++
		}
	}
	worst := 0
	for _, n := range same {
		worst = max(worst, n)
	}
	t.Logf("Bottlerocket, default-waves: %.1f %% of seeds become eligible at one instant; seed 0 before the first wave: %v",
		100*float64(worst)/MaxSeed, br.Offsets[0] == nil)
	if worst < MaxSeed/5 {
		t.Errorf("expected Bottlerocket's crowd of about 40 %%, found %d seeds", worst)
	}
}

func TestMonotonicAndOrdered(t *testing.T) {
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	s, _ := loadPolicy(t, "default-waves").Schedule(start)
	id := [16]byte{1}
	var prev time.Time
	for seed := uint32(0); seed < MaxSeed; seed++ {
		d := Eligible(Host{Seed: seed, ID: id}, s, start)
		if seed > 0 && d.Wave == Eligible(Host{Seed: seed - 1, ID: id}, s, start).Wave && d.EligibleAt.Before(prev) {
			t.Fatalf("seed %d is eligible before seed %d in the same wave", seed, seed-1)
		}
		prev = d.EligibleAt
	}
}

func FuzzWavesMonotonic(f *testing.F) {
	f.Add(uint32(5), []byte("host"), int64(3600), int64(7200))
	f.Fuzz(func(t *testing.T, seed uint32, id []byte, a, b int64) {
		start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
		s := Schedule{Waves: []Wave{{0, start}, {20, start.Add(3 * time.Hour)}, {500, start.Add(48 * time.Hour)}},
			Pauses: []Pause{{start.Add(10 * time.Hour), start.Add(20 * time.Hour)}, {From: start.Add(60 * time.Hour)}}}
		var h Host
		h.Seed = seed
		copy(h.ID[:], id)
		t1 := start.Add(time.Duration(a%(1<<40)) * time.Second)
		t2 := start.Add(time.Duration(b%(1<<40)) * time.Second)
		if t2.Before(t1) {
			t1, t2 = t2, t1
		}
		if Eligible(h, s, t1).Eligible && !Eligible(h, s, t2).Eligible {
			t.Fatalf("eligible at %v, not at later %v", t1, t2)
		}
	})
}

func TestPauseAndResume(t *testing.T) {
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	s, _ := loadPolicy(t, "default-waves").Schedule(start)
	hosts := hostsFor(5000, 2)
	pauseAt := start.Add(30 * time.Hour)
	before := map[int]time.Time{}
	for i, h := range hosts {
		before[i] = Eligible(h, s, start).EligibleAt
	}
	paused := s
	paused.Pauses = []Pause{{From: pauseAt}}
	resumed := s
	resumed.Pauses = []Pause{{From: pauseAt, To: pauseAt.Add(10 * time.Hour)}}
	for i, h := range hosts {
		d := Eligible(h, paused, pauseAt.Add(5*time.Hour))
		switch {
		case !before[i].After(pauseAt):
			if !d.Eligible {
				t.Fatalf("host eligible at %v lost eligibility in a pause", before[i])
			}
		case d.Eligible || !d.Paused || !d.EligibleAt.IsZero():
			t.Fatalf("host due at %v became eligible during the pause: %+v", before[i], d)
		}
		r := Eligible(h, resumed, start)
		want := before[i]
		if before[i].After(pauseAt) {
			want = want.Add(10 * time.Hour)
		}
		if !r.EligibleAt.Equal(want) {
			t.Fatalf("after resume, due %v, want %v", r.EligibleAt, want)
		}
	}
}

func TestDecisions(t *testing.T) {
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	if d := Eligible(Host{}, Schedule{}, start); !d.Eligible || d.Wave != -1 {
		t.Errorf("no waves: %+v", d)
	}
	s := Schedule{Waves: []Wave{{0, start}, {1024, start.Add(time.Hour)}}}
	d := Eligible(Host{Seed: 0}, s, start.Add(-time.Minute))
	if d.Eligible || d.EligibleAt.Before(start) {
		t.Errorf("before the first wave: %+v", d)
	}
	d = Eligible(Host{Seed: 2047}, s, start.Add(2*time.Hour))
	if !d.Eligible || d.Wave != 1 || d.LimitSeed != MaxSeed {
		t.Errorf("last wave (window as long as the one before): %+v", d)
	}
	// An end marker at 2048 sets the last wave's window.
	s.Waves = append(s.Waves, Wave{MaxSeed, start.Add(25 * time.Hour)})
	if d := Eligible(Host{Seed: 2047, ID: [16]byte{9}}, s, start.Add(2*time.Hour)); d.Eligible {
		t.Errorf("end marker ignored: %+v", d)
	}
	for _, bad := range []Schedule{
		{Waves: []Wave{{5, start}}},
		{Waves: []Wave{{0, start}, {10, start.Add(-time.Hour)}}},
		{Waves: []Wave{{0, start}}, Pauses: []Pause{{From: start}, {From: start.Add(time.Hour)}}},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
	// Waves that start together are legal (Bottlerocket's own test data has
	// them): the first of them simply has a window of no length.
	same := Schedule{Waves: []Wave{{0, start}, {10, start}}}
	if err := same.Validate(); err != nil {
		t.Errorf("equal start times refused: %v", err)
	}
	if d := Eligible(Host{Seed: 5}, same, start); !d.Eligible {
		t.Errorf("zero-length wave: %+v", d)
	}
}

func TestPolicyErrors(t *testing.T) {
	for name, text := range map[string]string{
		"no waves":        "# nothing\n",
		"zero percent":    "[[waves]]\nstart_after = '1 hour'\nfleet_percentage = 0\n",
		"shrinking":       "[[waves]]\nstart_after = '1 hour'\nfleet_percentage = 50\n[[waves]]\nstart_after = '2 hours'\nfleet_percentage = 40\n",
		"not 100":         "[[waves]]\nstart_after = '1 hour'\nfleet_percentage = 50\n",
		"bad offset":      "[[waves]]\nstart_after = 'soon'\nfleet_percentage = 100\n",
		"earlier":         "[[waves]]\nstart_after = '2 hours'\nfleet_percentage = 50\n[[waves]]\nstart_after = '1 hour'\nfleet_percentage = 100\n",
		"unknown key":     "[[waves]]\nstart_after = '1 hour'\nfleet_percent = 100\n",
		"unquoted string": "[[waves]]\nstart_after = 1 hour\nfleet_percentage = 100\n",
		"other table":     "[wave]\n",
	} {
		if _, err := ParsePolicy([]byte(text)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	p, err := ParsePolicy([]byte("last_wave_duration = \"2 days\" # spread\n[[waves]]\nstart_after = \"90m\"\nfleet_percentage = 100\n"))
	if err != nil || p.LastWaveDuration != 48*time.Hour || p.Waves[0].StartAfter != "90m" {
		t.Fatalf("%+v %v", p, err)
	}
}

func TestDescribe(t *testing.T) {
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	s, _ := loadPolicy(t, "default-waves").Schedule(start)
	info := s.Describe()
	sort.Slice(info, func(i, j int) bool { return info[i].Wave < info[j].Wave })
	if len(info) != 7 || info[0].FirstSeed != 0 || info[0].LastSeed != 19 || info[6].LastSeed != 2047 || info[6].Cumulative != 100 {
		t.Fatalf("%+v", info)
	}
	if info[6].End.Sub(info[6].Start) != 24*time.Hour {
		t.Errorf("the last window should be as long as the one before it (1 day): %v", info[6].End.Sub(info[6].Start))
	}
}
