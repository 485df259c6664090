package e2e

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"syscall"
	"testing"
)

// TestQuickstartStreamsAndSurvivesRestart runs `infera up` with no -f: the bundled quickstart
// model server, a completion and a streamed chat completion through the gateway, then a restart
// on the same state dir brings the service back.
func TestQuickstartStreamsAndSurvivesRestart(t *testing.T) {
	state := t.TempDir()
	u := startUpIn(t, state, "")
	if !strings.Contains(u.out.String(), "synthetic model") {
		t.Errorf("quickstart did not say its model is synthetic:\n%s", u.out)
	}
	u.waitReady("llm")

	resp, err := u.do(http.MethodPost, "llm.default.localhost", "/v1/completions",
		strings.NewReader(`{"model":"llm","prompt":"hello","max_tokens":8}`))
	if err != nil {
		t.Fatal(err)
	}
	var completion struct {
		Choices []struct{ Text string } `json:"choices"`
		Usage   struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&completion); err != nil || resp.StatusCode != 200 {
		t.Fatalf("completion: %d %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	if len(completion.Choices) != 1 || completion.Usage.CompletionTokens == 0 {
		t.Errorf("completion = %+v", completion)
	}

	// Routed by model name alone, streamed.
	resp, err = u.do(http.MethodPost, u.gateway, "/v1/chat/completions",
		strings.NewReader(`{"model":"llm","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":4}`))
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("stream: %d %s", resp.StatusCode, ct)
	}
	var events []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "data: ") {
			events = append(events, strings.TrimPrefix(line, "data: "))
		}
	}
	resp.Body.Close()
	if len(events) < 2 || events[len(events)-1] != "[DONE]" || !strings.Contains(events[0], "chat.completion.chunk") {
		t.Errorf("SSE events = %q\n%s", events, u.out)
	}

	if out, code := u.infera(t, "", "logs", "llm"); code != 0 || !strings.Contains(out, "model") {
		t.Errorf("infera logs llm: exit %d\n%s", code, out)
	}

	if err := u.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, u.out)
	}
	u2 := startUpIn(t, state, "")
	u2.waitReady("llm")
	if code, _ := u2.get(t, "llm.default.localhost", "/v1/models"); code != 200 {
		t.Errorf("after restart /v1/models = %d", code)
	}
}
