package fleetlock

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/updog/updog/internal/testutil"
)

// Known answers computed by systemd 252 (Debian 12's systemd-id128) on a
// machine whose /etc/machine-id was 3d1219c7c4c5404aaa1f6d2a48adfda4:
//
//	systemd-id128 machine-id -a APPID
//
// de35106b6ec24688b63afddaa156679b is the application ID Zincati uses
// for its FleetLock ID.
var knownAnswers = []struct{ machine, app, want string }{
	{"3d1219c7c4c5404aaa1f6d2a48adfda4", "de35106b6ec24688b63afddaa156679b", "975228d46dc94622b9bbe16671e2b58d"},
	{"3d1219c7c4c5404aaa1f6d2a48adfda4", "00000000000000000000000000000001", "c92b12aba31e4236a2296560761415ec"},
	{"3d1219c7c4c5404aaa1f6d2a48adfda4", "8f3a1c2e5b7d4e6f9a0b1c2d3e4f5a6b", "3a50b87682c3419492638042b82af13b"},
	{"3d1219c7c4c5404aaa1f6d2a48adfda4", UpdogAppID, "6723ba60567d41a797607edd5b28e0fd"},
}

func TestMachineAppIDKnownAnswers(t *testing.T) {
	for _, ka := range knownAnswers {
		app, err := ParseID128(ka.app)
		if err != nil {
			t.Fatal(err)
		}
		for _, file := range []string{ka.machine + "\n", ka.machine, strings.ToUpper(ka.machine),
			ka.machine[:8] + "-" + ka.machine[8:12] + "-" + ka.machine[12:16] + "-" + ka.machine[16:20] + "-" + ka.machine[20:] + "\n"} {
			got, err := MachineAppID([]byte(file), app)
			if err != nil {
				t.Fatalf("MachineAppID(%q): %v", file, err)
			}
			if got != ka.want {
				t.Errorf("MachineAppID(%q, %s) = %s, want %s (systemd)", file, ka.app, got, ka.want)
			}
		}
	}
	got, err := DefaultID([]byte(knownAnswers[0].machine + "\n"))
	if err != nil || got != knownAnswers[3].want {
		t.Errorf("DefaultID = %s, %v; want %s", got, err, knownAnswers[3].want)
	}
	if !ValidID(got) {
		t.Errorf("DefaultID %q is not a valid ID", got)
	}
}

// TestMachineAppIDMatchesSystemd compares against systemd-id128 on this
// machine's own /etc/machine-id. A machine without an initialized machine
// ID skips (that is the machine's state, not a missing tool).
func TestMachineAppIDMatchesSystemd(t *testing.T) {
	tool := testutil.Tool(t, "systemd-id128")
	data, err := os.ReadFile("/etc/machine-id")
	if err != nil {
		t.Skipf("no /etc/machine-id: %v", err)
	}
	if _, err := ParseMachineID(data); err != nil {
		t.Skipf("machine ID not usable: %v", err)
	}
	for _, ka := range knownAnswers {
		out, err := exec.Command(tool, "machine-id", "--app-specific="+ka.app).Output()
		if err != nil {
			t.Fatalf("systemd-id128: %v", err)
		}
		app, _ := ParseID128(ka.app)
		got, err := MachineAppID(data, app)
		if err != nil {
			t.Fatal(err)
		}
		if want := strings.TrimSpace(string(out)); got != want {
			t.Errorf("app %s: got %s, systemd-id128 says %s", ka.app, got, want)
		}
	}
}

func TestParseMachineIDRefuses(t *testing.T) {
	for _, s := range []string{"", "\n", "uninitialized\n", "00000000000000000000000000000000\n",
		"3d1219c7c4c5404aaa1f6d2a48adfda", "3d1219c7c4c5404aaa1f6d2a48adfda4\n\n", "3d1219c7c4c5404aaa1f6d2a48adfdag",
		"3d1219c7c4c5404aaa1f6d2a48adfda4 ", "3d1219c7+c4c5-404a-aa1f-6d2a48adfda4"} {
		if _, err := ParseMachineID([]byte(s)); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseMachineID(%q) = %v, want ErrInvalid", s, err)
		}
	}
}

func TestAppSpecificVersionBits(t *testing.T) {
	var m, a [16]byte
	for i := range 64 {
		m[0], a[15] = byte(i), byte(i*7)
		id := AppSpecific(m, a)
		if id[6]>>4 != 4 || id[8]>>6 != 2 {
			t.Fatalf("AppSpecific: version/variant bits wrong: %x", id)
		}
	}
}
