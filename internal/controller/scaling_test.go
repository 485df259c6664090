package controller

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/infera-dev/infera/internal/workload"
)

// TestPokeHandsTheActivatorStat: a poke reaches the scaler as Knative's activator's
// first-request stat, stamped with the request's arrival even when the loop handles it later,
// with the replicas ready then; pokes that arrive before the loop runs are each handled once
// per revision, oldest first, and none is dropped; a poke for a revision the loop no longer
// scales is ignored.
func TestPokeHandsTheActivatorStat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, "")
		h.scaler.initial = 0
		h.apply(service("llm", ""))
		h.apply(service("chat", ""))
		h.calls.take()
		chat1 := workload.RevisionID("default/chat-00001")

		// Hold the loop inside a stats collection while the requests arrive.
		release := make(chan struct{})
		h.gw.mu.Lock()
		h.gw.blockCollect = release
		h.gw.mu.Unlock()
		h.clock.Advance(time.Second)
		synctest.Wait()
		h.clock.Advance(300 * time.Millisecond)
		h.ctrl.Poke(llm1)
		h.clock.Advance(200 * time.Millisecond)
		h.ctrl.Poke(chat1)
		h.ctrl.Poke(llm1) // the same cold start: the first arrival counts
		for range 2000 {  // more than any channel buffer would hold
			h.ctrl.Poke(chat1)
		}
		h.clock.Advance(100 * time.Millisecond)
		close(release)
		synctest.Wait()
		h.expect(
			"scaler.Poke default/llm-00001 1/1 at +1.3s (now +1.6s) ready 0",
			"gateway.SetActivatorInPath default/llm-00001 false",
			"supervisor.Scale default/llm-00001 1",
			"scaler.Poke default/chat-00001 1/1 at +1.5s (now +1.6s) ready 0",
			"gateway.SetActivatorInPath default/chat-00001 false",
			"supervisor.Scale default/chat-00001 1",
		)

		// Ready replicas as the supervisor reports them go with the stat.
		h.sup.set(llm1, RevisionStatus{Ready: 1, Running: 1})
		h.ctrl.Poke(llm1)
		synctest.Wait()
		h.expect("scaler.Poke default/llm-00001 1/1 at +1.6s (now +1.6s) ready 1")

		h.delete(service("chat", ""))
		h.calls.take()
		h.ctrl.Poke(chat1)
		synctest.Wait()
		h.expect()
	})
}
