package gateway

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/infera-dev/infera/internal/workload"
)

// TestColdStartProgressSSE: a held request with X-Infera-Progress: sse gets 200 and an event
// stream of cold-start comments while it waits, then the replica's own body; without the
// header nothing changes.
func TestColdStartProgressSSE(t *testing.T) {
	rg := newRig(t, Config{ColdStartProgress: func(workload.RevisionID) string { return "phase=image pulling app: 1.0 MiB of 4.0 MiB" }})
	id := rg.service("cold", workload.Revision{})
	req := rg.newRequest(context.Background(), "POST", "cold.default.localhost", "/", "hi")
	req.Header.Set(ProgressHeader, "sse")
	res, err := rg.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("%d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	rd := bufio.NewReader(res.Body)
	line, err := rd.ReadString('\n')
	if err != nil || line != ": infera cold-start phase=image pulling app: 1.0 MiB of 4.0 MiB\n" {
		t.Fatalf("first line %q %v", line, err)
	}
	// The replica comes up: its answer follows the comments.
	rg.g.SetEndpoints(id, []workload.Endpoint{backend(t, "r1", named("r1"))})
	rest, err := io.ReadAll(rd)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(rest), "r1:hi") {
		t.Fatalf("rest %q, want the replica's body last", rest)
	}
	for _, l := range strings.Split(strings.TrimSuffix(string(rest), "r1:hi"), "\n") {
		if l != "" && !strings.HasPrefix(l, ": infera cold-start ") {
			t.Errorf("a line before the body that is not a comment: %q", l)
		}
	}

	// Without the header: the replica's answer as it is.
	plain := rg.do(rg.newRequest(context.Background(), "POST", "cold.default.localhost", "/", "x"))
	if plain.code != 200 || plain.body != "r1:x" || plain.header.Get("Content-Type") == "text/event-stream" {
		t.Errorf("plain request: %d %q %v", plain.code, plain.body, plain.header)
	}
	// With the header but a ready replica: not held, no comments.
	req = rg.newRequest(context.Background(), "POST", "cold.default.localhost", "/", "y")
	req.Header.Set(ProgressHeader, "sse")
	if got := rg.do(req); got.code != 200 || got.body != "r1:y" {
		t.Errorf("not held: %d %q", got.code, got.body)
	}
}
