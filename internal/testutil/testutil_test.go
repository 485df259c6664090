package testutil

import (
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	var calls atomic.Int32
	if !Poll(5*time.Second, func() bool { return calls.Add(1) == 3 }) {
		t.Fatal("condition true on the third call was not seen")
	}
	if Poll(10*time.Millisecond, func() bool { return false }) {
		t.Fatal("a condition that never holds was reported held")
	}
}

func TestGoroutinesSettle(t *testing.T) {
	// At least this goroutine runs, so zero is never reached: the stacks come back.
	if stacks, ok := GoroutinesSettle(20*time.Millisecond, 0); ok || !strings.Contains(stacks, "TestGoroutinesSettle") {
		t.Fatalf("settled to zero goroutines, or no stacks: %v\n%s", ok, stacks)
	}
	if stacks, ok := GoroutinesSettle(5*time.Second, runtime.NumGoroutine()+100); !ok {
		t.Fatalf("did not settle below a generous bound:\n%s", stacks)
	}
}

func TestSyncBuffer(t *testing.T) {
	var b SyncBuffer
	done := make(chan struct{})
	go func() { b.Write([]byte("a")); close(done) }()
	b.Write([]byte("b"))
	<-done
	if s := b.String(); s != "ab" && s != "ba" {
		t.Errorf("String() = %q", s)
	}
}
