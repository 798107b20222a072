package failpoint

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/updog/updog/internal/testutil"
)

// TestSequence runs this test binary as a child built with or without
// the tag and checks that it stops exactly at the end of its sequence.
func TestSequence(t *testing.T) {
	if os.Getenv("FAILPOINT_CHILD") != "" {
		for _, n := range strings.Split(os.Getenv("FAILPOINT_CHILD"), ",") {
			os.Stdout.WriteString(n + "\n")
			Hit(n)
		}
		return
	}
	if !Enabled {
		t.Skip("built without -tags updog_failpoints: nothing else to check (make test-slow builds with it)")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSequence$")
	cmd.Env = append(os.Environ(), "FAILPOINT_CHILD=x,a,y,b,a,c", "UPDOG_FAILPOINT=a,b,a")
	var out strings.Builder
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !testutil.Stopped(cmd.Process.Pid) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the child never stopped")
		}
		time.Sleep(time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	// Stopped at the second "a", after "b": "c" was never reached.
	if got := strings.Fields(out.String()); strings.Join(got, ",") != "x,a,y,b,a" {
		t.Fatalf("the child ran %v before it stopped, want x a y b a", got)
	}
}
