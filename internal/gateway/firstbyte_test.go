package gateway

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/testutil"
	"github.com/infera-dev/infera/internal/workload"
)

// TestOnFirstByte: a request held for lack of a ready replica reports its response's first
// byte, with the replica and the injected clock's time when the replica's response started;
// one that found a ready replica, or was refused, reports nothing.
func TestOnFirstByte(t *testing.T) {
	type report struct {
		id      workload.RevisionID
		replica string
		at      time.Time
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		warm bool // the replica is ready before the request arrives
		// status the replica answers; the first byte is its status line, whatever it says
		status int
		want   bool
	}{
		{name: "held until a replica is ready", status: http.StatusOK, want: true},
		{name: "held, answered with an error status", status: http.StatusInternalServerError, want: true},
		{name: "a ready replica", warm: true, status: http.StatusOK, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := testutil.NewFakeClock(start)
			reports := make(chan report, 4)
			demands := make(chan struct{}, 4)
			rg := newRig(t, Config{
				Clock:    clk,
				OnDemand: func(workload.RevisionID) { demands <- struct{}{} },
				OnFirstByte: func(id workload.RevisionID, replica string, at time.Time) {
					reports <- report{id, replica, at}
				},
			})
			answered := make(chan struct{})
			ep := backend(t, "r1", func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				w.(http.Flusher).Flush()
				select { // the first byte is out before the body
				case <-answered:
				case <-r.Context().Done():
				}
			})
			var id workload.RevisionID
			if tt.warm {
				id = rg.service("cold", workload.Revision{}, ep)
			} else {
				id = rg.service("cold", workload.Revision{})
			}
			res := rg.goDo(rg.newRequest(testCtx(t), http.MethodGet, "cold.default.localhost", "/", ""))
			if !tt.warm {
				<-demands // held: OnDemand comes once it is in the queue
				clk.Advance(250 * time.Millisecond)
				rg.g.SetEndpoints(id, []workload.Endpoint{ep})
			}
			if tt.want {
				got := <-reports
				if want := (report{id, "r1", start.Add(250 * time.Millisecond)}); got != want {
					t.Errorf("OnFirstByte(%v), want %v", got, want)
				}
			}
			close(answered)
			if r := <-res; r.err != nil || r.code != tt.status {
				t.Fatalf("request: %d %v", r.code, r.err)
			}
			// Once the request is over, every report it would make has been made.
			if len(reports) != 0 {
				t.Errorf("reports left: %v", <-reports)
			}
		})
	}
}

// TestOnFirstByteNotForRefused: a held request that ends before any replica answers (its
// revision removed) reports no first byte.
func TestOnFirstByteNotForRefused(t *testing.T) {
	demands := make(chan struct{}, 1)
	reports := make(chan string, 1)
	rg := newRig(t, Config{
		OnDemand:    func(workload.RevisionID) { demands <- struct{}{} },
		OnFirstByte: func(_ workload.RevisionID, replica string, _ time.Time) { reports <- replica },
	})
	id := rg.service("gone", workload.Revision{})
	res := rg.goDo(rg.newRequest(context.Background(), http.MethodGet, "gone.default.localhost", "/", ""))
	<-demands
	rg.g.RemoveRevision(id)
	if r := <-res; r.code != http.StatusServiceUnavailable {
		t.Fatalf("held request of a removed revision: %d %v", r.code, r.err)
	}
	if len(reports) != 0 {
		t.Errorf("first byte reported from %s", <-reports)
	}
}
