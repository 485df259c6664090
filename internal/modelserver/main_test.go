package modelserver

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/testutil"
)

// TestMain fails the run if goroutines of this package outlive the tests:
// every server must have stopped and every request must have ended.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaked := leakedGoroutines(5 * time.Second); leaked != "" {
			fmt.Fprintf(os.Stderr, "goroutines left running after the tests:\n%s\n", leaked)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines waits up to patience for goroutines running this
// package's code (other than TestMain) to end, and returns their stacks if
// some do not.
func leakedGoroutines(patience time.Duration) string {
	var leaked []string
	testutil.Poll(patience, func() bool {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		leaked = leaked[:0]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "infera/internal/modelserver.") && !strings.Contains(g, "modelserver.TestMain") {
				leaked = append(leaked, g)
			}
		}
		return len(leaked) == 0
	})
	return strings.Join(leaked, "\n\n")
}
