package modelserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// testServer is Run serving a real model on a loopback port.
type testServer struct {
	url    string
	client *http.Client
	cancel context.CancelFunc
	done   chan error

	stopOnce sync.Once
	stopErr  error
	stopped  atomic.Bool
}

// startServer runs Run with cfg (a fresh 1 MiB model and 127.0.0.1:0 unless
// set) and returns once the model is served. The server is stopped, and its
// error checked, when the test ends.
func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	if cfg.ModelDir == "" {
		cfg.ModelDir = newModelDir(t, 1<<20)
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{cancel: cancel, done: make(chan error, 1), client: &http.Client{Transport: &http.Transport{}}}
	ready := make(chan string, 1)
	go func() { ts.done <- Run(ctx, cfg, func(addr string) { ready <- addr }) }()
	select {
	case addr := <-ready:
		ts.url = "http://" + addr
	case err := <-ts.done:
		cancel()
		t.Fatalf("Run returned before ready: %v", err)
	}
	t.Cleanup(func() {
		if ts.stopped.Load() {
			return // the test called stop and checked its error
		}
		if err := ts.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return ts
}

// stop cancels Run's context and returns what Run returned.
func (ts *testServer) stop() error {
	ts.stopped.Store(true)
	ts.stopOnce.Do(func() {
		ts.cancel()
		ts.stopErr = <-ts.done
		ts.client.CloseIdleConnections()
	})
	return ts.stopErr
}

// do sends a request with an optional JSON body (a string is sent as is) and
// the X-Test header tag, and returns the status and body.
func (ts *testServer) do(t *testing.T, method, path string, body any, tag string) (int, []byte) {
	t.Helper()
	resp, err := ts.send(context.Background(), method, path, body, tag)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, b
}

func (ts *testServer) send(ctx context.Context, method, path string, body any, tag string) (*http.Response, error) {
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		r = bytes.NewReader(js)
	}
	req, err := http.NewRequestWithContext(ctx, method, ts.url+path, r)
	if err != nil {
		return nil, err
	}
	if r != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tag != "" {
		req.Header.Set("X-Test", tag)
	}
	return ts.client.Do(req)
}

func decode[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
	return v
}

// openAIError is OpenAI's error body.
type openAIError struct {
	Error *struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

type testCompletion struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	Model   string `json:"model"`
	Choices []struct {
		Index        int     `json:"index"`
		Text         string  `json:"text"`
		FinishReason *string `json:"finish_reason"`
		Message      *struct {
			Role    string  `json:"role"`
			Content *string `json:"content"`
		} `json:"message"`
		Delta *struct {
			Role    string  `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
}

func (c testCompletion) text(t *testing.T) string {
	t.Helper()
	if len(c.Choices) != 1 {
		t.Fatalf("%d choices, want 1", len(c.Choices))
	}
	if m := c.Choices[0].Message; m != nil {
		if m.Content == nil {
			t.Fatal("message without content")
		}
		return *m.Content
	}
	return c.Choices[0].Text
}

func (c testCompletion) finish() string {
	if len(c.Choices) == 0 || c.Choices[0].FinishReason == nil {
		return "<nil>"
	}
	return *c.Choices[0].FinishReason
}

func completion(prompt string, maxTokens int) map[string]any {
	return map[string]any{"model": DefaultName, "prompt": prompt, "max_tokens": maxTokens}
}

func chat(content string, maxTokens int) map[string]any {
	return map[string]any{"model": DefaultName, "max_tokens": maxTokens, "temperature": 0,
		"messages": []map[string]any{{"role": "user", "content": content}}}
}

func with(m map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(m)+len(kv)/2)
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

func TestOpenAIGenerate(t *testing.T) {
	ts := startServer(t, Config{})
	tests := []struct {
		name       string
		path       string
		body       map[string]any
		object     string
		wantTokens int    // completion_tokens
		wantFinish string // finish_reason
	}{
		{"completion", "/v1/completions", completion("Once upon a time", 8), "text_completion", 8, "length"},
		{"completion default max_tokens", "/v1/completions", map[string]any{"prompt": "hello"}, "text_completion", defaultMaxTokens, "length"},
		{"default max_tokens lowered to fit the context", "/v1/completions", map[string]any{"prompt": strings.Repeat("the ", maxContext-6)}, "text_completion", 5, "length"},
		{"completion token ids", "/v1/completions", with(completion("", 5), "prompt", []int{1, 40, 41, 42}), "text_completion", 5, "length"},
		{"chat", "/v1/chat/completions", chat("Tell me about the sea.", 12), "chat.completion", 12, "length"},
		{"chat max_completion_tokens", "/v1/chat/completions", with(chat("hi", 99), "max_completion_tokens", 3), "chat.completion", 3, "length"},
		{"chat content parts", "/v1/chat/completions",
			map[string]any{"messages": []any{map[string]any{"role": "user", "content": []any{map[string]any{"type": "text", "text": "hi"}}}}, "max_tokens": 4},
			"chat.completion", 4, "length"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, b := ts.do(t, "POST", tt.path, tt.body, "")
			if code != http.StatusOK {
				t.Fatalf("status %d: %s", code, b)
			}
			c := decode[testCompletion](t, b)
			if c.Object != tt.object || c.Model != DefaultName || c.ID == "" || c.Created == 0 {
				t.Errorf("object %q, model %q, id %q, created %d", c.Object, c.Model, c.ID, c.Created)
			}
			text := c.text(t)
			if strings.TrimSpace(text) == "" {
				t.Errorf("empty text")
			}
			if f := c.finish(); f != tt.wantFinish {
				t.Errorf("finish_reason %s, want %s", f, tt.wantFinish)
			}
			u := c.Usage
			if u == nil || u.CompletionTokens != tt.wantTokens || u.PromptTokens < 1 || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
				t.Errorf("usage %+v, want %d completion tokens", u, tt.wantTokens)
			}
			if msg := c.Choices[0].Message; tt.object == "chat.completion" && (msg == nil || msg.Role != "assistant") {
				t.Errorf("chat message %+v, want role assistant", msg)
			}
			// Greedy decoding: the same request gives the same text.
			_, b2 := ts.do(t, "POST", tt.path, tt.body, "")
			if again := decode[testCompletion](t, b2).text(t); again != text {
				t.Errorf("second response %q differs from first %q", again, text)
			}
		})
	}
}

func TestOpenAIPromptTokensAndDeterminism(t *testing.T) {
	ts := startServer(t, Config{})
	gen := func(prompt string, n int) testCompletion {
		code, b := ts.do(t, "POST", "/v1/completions", completion(prompt, n), "")
		if code != http.StatusOK {
			t.Fatalf("status %d: %s", code, b)
		}
		return decode[testCompletion](t, b)
	}
	// <s> the sea is blue . -> 6 tokens.
	if u := gen("The sea is blue.", 1).Usage; u.PromptTokens != 6 {
		t.Errorf("prompt_tokens %d, want 6 (<s> and five)", u.PromptTokens)
	}
	a, b := gen("The sea is blue.", 20).text(t), gen("A dog ran home.", 20).text(t)
	if a == b {
		t.Errorf("different prompts gave the same text %q", a)
	}
	// A shorter max_tokens gives a prefix of the longer text.
	if short := gen("The sea is blue.", 5).text(t); !strings.HasPrefix(a, short) {
		t.Errorf("5 tokens %q is not a prefix of 20 tokens %q", short, a)
	}
	// Another server of the same model says the same.
	dir := newModelDir(t, 1<<20)
	other := startServer(t, Config{ModelDir: dir})
	_, body := other.do(t, "POST", "/v1/completions", completion("The sea is blue.", 20), "")
	if got := decode[testCompletion](t, body).text(t); got != a {
		t.Errorf("second server: %q, first: %q", got, a)
	}
}

func TestOpenAIStop(t *testing.T) {
	ts := startServer(t, Config{})
	prompt := "Write about the river and the mountain."
	_, b := ts.do(t, "POST", "/v1/completions", completion(prompt, 24), "")
	full := decode[testCompletion](t, b).text(t)
	words := strings.Fields(full)
	if len(words) < 8 {
		t.Fatalf("too few words to test stop: %q", full)
	}
	stop := " " + words[5]
	want := full[:strings.Index(full, stop)]
	tests := []struct {
		name string
		stop any
	}{
		{"string", stop},
		{"array", []string{"never in the text", stop}},
	}
	for _, tt := range tests {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s stream=%v", tt.name, stream), func(t *testing.T) {
				body := with(completion(prompt, 24), "stop", tt.stop, "stream", stream)
				code, b := ts.do(t, "POST", "/v1/completions", body, "")
				if code != http.StatusOK {
					t.Fatalf("status %d: %s", code, b)
				}
				var text, finish string
				if stream {
					for _, c := range sseChunks(t, b) {
						if len(c.Choices) == 1 {
							text += c.Choices[0].Text
							if f := c.Choices[0].FinishReason; f != nil {
								finish = *f
							}
						}
					}
				} else {
					c := decode[testCompletion](t, b)
					text, finish = c.text(t), c.finish()
				}
				if text != want || finish != "stop" {
					t.Errorf("text %q finish %q, want %q stop (full text %q)", text, finish, want, full)
				}
			})
		}
	}
}

// sseChunks checks that b is server-sent events, each a single "data: "
// line and a blank line, the last "data: [DONE]", and decodes the others.
func sseChunks(t *testing.T, b []byte) []testCompletion {
	t.Helper()
	s := string(b)
	if !strings.HasSuffix(s, "data: [DONE]\n\n") {
		t.Fatalf("stream does not end with data: [DONE]: %q", s)
	}
	events := strings.Split(strings.TrimSuffix(s, "\n\n"), "\n\n")
	var out []testCompletion
	for i, ev := range events[:len(events)-1] {
		data, ok := strings.CutPrefix(ev, "data: ")
		if !ok || strings.Contains(data, "\n") {
			t.Fatalf("event %d is not one data line: %q", i, ev)
		}
		out = append(out, decode[testCompletion](t, []byte(data)))
	}
	return out
}

func TestOpenAIStream(t *testing.T) {
	ts := startServer(t, Config{})
	tests := []struct {
		name         string
		path         string
		body         map[string]any
		object       string
		includeUsage bool
	}{
		{"chat", "/v1/chat/completions", chat("Tell me about the sea.", 10), "chat.completion.chunk", false},
		{"chat with usage", "/v1/chat/completions", chat("Tell me about the sea.", 10), "chat.completion.chunk", true},
		{"completion", "/v1/completions", completion("Once upon a time", 10), "text_completion", false},
		{"completion with usage", "/v1/completions", completion("Once upon a time", 10), "text_completion", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, b := ts.do(t, "POST", tt.path, tt.body, "")
			whole := decode[testCompletion](t, b)

			body := with(tt.body, "stream", true)
			if tt.includeUsage {
				body["stream_options"] = map[string]any{"include_usage": true}
			}
			resp, err := ts.send(context.Background(), "POST", tt.path, body, "")
			if err != nil {
				t.Fatal(err)
			}
			b, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("status %d, content type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
			}
			chunks := sseChunks(t, b)
			if tt.includeUsage {
				last := chunks[len(chunks)-1]
				chunks = chunks[:len(chunks)-1]
				if len(last.Choices) != 0 || last.Usage == nil || *last.Usage != *whole.Usage {
					t.Errorf("usage chunk %+v, want no choices and usage %+v", last, whole.Usage)
				}
			}
			var text strings.Builder
			for i, c := range chunks {
				if c.Object != tt.object || c.ID != chunks[0].ID || c.Model != DefaultName || len(c.Choices) != 1 || c.Usage != nil {
					t.Fatalf("chunk %d: %+v", i, c)
				}
				ch := c.Choices[0]
				last := i == len(chunks)-1
				if (ch.FinishReason != nil) != last {
					t.Errorf("chunk %d: finish_reason %v; want one only on the last chunk", i, ch.FinishReason)
				}
				if tt.object == "chat.completion.chunk" {
					if ch.Delta == nil {
						t.Fatalf("chunk %d has no delta", i)
					}
					if (ch.Delta.Role == "assistant") != (i == 0) {
						t.Errorf("chunk %d: role %q; want assistant on the first chunk only", i, ch.Delta.Role)
					}
					if ch.Delta.Content != nil {
						text.WriteString(*ch.Delta.Content)
					}
				} else {
					text.WriteString(ch.Text)
				}
			}
			if got, want := text.String(), whole.text(t); got != want {
				t.Errorf("streamed text %q, non-streamed %q", got, want)
			}
			if got := chunks[len(chunks)-1].finish(); got != whole.finish() {
				t.Errorf("streamed finish %s, non-streamed %s", got, whole.finish())
			}
			// One chunk per token, plus the role chunk for chat and the finish chunk.
			if want := 10 + 1 + map[bool]int{true: 1}[tt.object == "chat.completion.chunk"]; len(chunks) != want {
				t.Errorf("%d chunks, want %d", len(chunks), want)
			}
		})
	}
}

func TestOpenAIModels(t *testing.T) {
	ts := startServer(t, Config{Names: []string{"org/tiny"}})
	code, b := ts.do(t, "GET", "/v1/models", nil, "")
	list := decode[struct {
		Object string `json:"object"`
		Data   []struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			OwnedBy string `json:"owned_by"`
			Created int64  `json:"created"`
		} `json:"data"`
	}](t, b)
	if code != 200 || list.Object != "list" || len(list.Data) != 1 || list.Data[0].ID != "org/tiny" || list.Data[0].Object != "model" || list.Data[0].Created == 0 {
		t.Errorf("GET /v1/models: %d %s", code, b)
	}
	if code, b := ts.do(t, "GET", "/v1/models/org/tiny", nil, ""); code != 200 || decode[map[string]any](t, b)["id"] != "org/tiny" {
		t.Errorf("GET /v1/models/org/tiny: %d %s", code, b)
	}
	if code, b := ts.do(t, "GET", "/v1/models/other", nil, ""); code != 404 || !strings.Contains(string(b), "model_not_found") {
		t.Errorf("GET /v1/models/other: %d %s", code, b)
	}
	// The served name, not config.json's, is the one requests must use.
	if code, b := ts.do(t, "POST", "/v1/completions", completion("hi", 1), ""); code != 404 {
		t.Errorf("completion for config.json's name: %d %s", code, b)
	}
	if code, b := ts.do(t, "POST", "/v1/completions", with(completion("hi", 1), "model", "org/tiny"), ""); code != 200 {
		t.Errorf("completion for the served name: %d %s", code, b)
	}
}

func TestOpenAIErrors(t *testing.T) {
	ts := startServer(t, Config{MaxTokens: 200})
	tests := []struct {
		name      string
		method    string
		path      string
		body      any
		wantCode  int
		wantType  string
		wantParam string
		wantMsg   string
	}{
		{"bad JSON", "POST", "/v1/completions", `{"prompt": `, 400, "invalid_request_error", "", "invalid JSON body"},
		{"not an object", "POST", "/v1/chat/completions", `[1]`, 400, "invalid_request_error", "", "invalid JSON body"},
		{"trailing data", "POST", "/v1/completions", `{"prompt":"a"} {}`, 400, "invalid_request_error", "", "unexpected data"},
		{"unknown model", "POST", "/v1/completions", with(completion("hi", 1), "model", "gpt-9"), 404, "invalid_request_error", "model", "The model `gpt-9` does not exist."},
		{"unknown model chat", "POST", "/v1/chat/completions", with(chat("hi", 1), "model", "gpt-9"), 404, "invalid_request_error", "model", "does not exist"},
		{"no prompt", "POST", "/v1/completions", map[string]any{"max_tokens": 1}, 400, "invalid_request_error", "prompt", "prompt is required"},
		{"bad prompt", "POST", "/v1/completions", map[string]any{"prompt": 3}, 400, "invalid_request_error", "prompt", "prompt must be"},
		{"token id out of range", "POST", "/v1/completions", map[string]any{"prompt": []int{1, 99999}}, 400, "invalid_request_error", "prompt", "outside the vocabulary"},
		{"max_tokens 0", "POST", "/v1/completions", completion("hi", 0), 400, "invalid_request_error", "max_tokens", "between 1 and 200"},
		{"max_tokens over limit", "POST", "/v1/chat/completions", chat("hi", 201), 400, "invalid_request_error", "max_tokens", "between 1 and 200"},
		{"prompt and max_tokens over the context", "POST", "/v1/completions", completion(strings.Repeat("the ", 4000), 100), 400, "invalid_request_error", "max_tokens",
			"This model's maximum context length is 4096 tokens. However, you requested 4101 tokens (4001 in the prompt, 100 in the completion)."},
		{"prompt fills the context", "POST", "/v1/chat/completions", chat(strings.Repeat("the ", 5000), 1), 400, "invalid_request_error", "prompt", "your prompt has"},
		{"n 2", "POST", "/v1/completions", with(completion("hi", 1), "n", 2), 400, "invalid_request_error", "n", "n must be 1"},
		{"echo", "POST", "/v1/completions", with(completion("hi", 1), "echo", true), 400, "invalid_request_error", "echo", "echo"},
		{"bad stop", "POST", "/v1/completions", with(completion("hi", 1), "stop", 5), 400, "invalid_request_error", "", "string or an array"},
		{"no messages", "POST", "/v1/chat/completions", map[string]any{"messages": []any{}}, 400, "invalid_request_error", "messages", "must not be empty"},
		{"no role", "POST", "/v1/chat/completions", map[string]any{"messages": []any{map[string]any{"content": "x"}}}, 400, "invalid_request_error", "messages", "role is required"},
		{"image part", "POST", "/v1/chat/completions", map[string]any{"messages": []any{map[string]any{"role": "user", "content": []any{map[string]any{"type": "image_url"}}}}}, 400, "invalid_request_error", "messages", "only text"},
		{"unknown path", "GET", "/v1/nothing", nil, 404, "not_found_error", "", "no route for GET /v1/nothing"},
		{"wrong method", "GET", "/v1/completions", nil, 405, "invalid_request_error", "", "method not allowed, use POST"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, b := ts.do(t, tt.method, tt.path, tt.body, "")
			e := decode[openAIError](t, b)
			if code != tt.wantCode || e.Error == nil {
				t.Fatalf("status %d body %s, want %d and an error", code, b, tt.wantCode)
			}
			param := ""
			if e.Error.Param != nil {
				param = *e.Error.Param
			}
			if e.Error.Type != tt.wantType || param != tt.wantParam || !strings.Contains(e.Error.Message, tt.wantMsg) {
				t.Errorf("error %s; want type %q, param %q, message containing %q", b, tt.wantType, tt.wantParam, tt.wantMsg)
			}
		})
	}
}

type kserveOutput struct {
	Name     string          `json:"name"`
	Shape    []int64         `json:"shape"`
	Datatype string          `json:"datatype"`
	Data     json.RawMessage `json:"data"`
}

type kserveResponse struct {
	ModelName    string         `json:"model_name"`
	ModelVersion string         `json:"model_version"`
	ID           string         `json:"id"`
	Parameters   map[string]any `json:"parameters"`
	Outputs      []kserveOutput `json:"outputs"`
}

func TestKServe(t *testing.T) {
	ts := startServer(t, Config{})
	m := "/v2/models/" + DefaultName
	gets := []struct {
		path     string
		wantCode int
		want     string // a fragment of the body
	}{
		{"/v2", 200, `"extensions":[]`},
		{"/v2/health/live", 200, `{"live":true}`},
		{"/v2/health/ready", 200, `{"ready":true}`},
		{m, 200, `"versions":["1"]`},
		{m, 200, `{"name":"text_input","datatype":"BYTES","shape":[-1]}`},
		{m, 200, `{"name":"text_output","datatype":"BYTES","shape":[-1]}`},
		{m + "/versions/1", 200, `"name":"` + DefaultName + `"`},
		{m + "/ready", 200, `"ready":true`},
		{m + "/versions/1/ready", 200, `"ready":true`},
		{m + "/versions/2/ready", 404, `"error":"model \"` + DefaultName + `\" has no version \"2\"`},
		{"/v2/models/other", 404, `{"error":"The model ` + "`other`" + ` does not exist."}`},
		{"/v2/models/other/ready", 404, `"error"`},
		{m + "/infer", 405, `{"error":"GET /v2/models/` + DefaultName + `/infer: method not allowed, use POST"}`},
		{"/v2/nothing", 404, `{"error":"no route for GET /v2/nothing"}`},
	}
	for _, tt := range gets {
		t.Run("GET "+tt.path, func(t *testing.T) {
			code, b := ts.do(t, "GET", tt.path, nil, "")
			if code != tt.wantCode || !strings.Contains(string(b), tt.want) {
				t.Errorf("status %d body %s; want %d and %s", code, b, tt.wantCode, tt.want)
			}
		})
	}

	// text_output is what /v1/completions says for the same prompt.
	_, b := ts.do(t, "POST", "/v1/completions", completion("Tell me about the sea.", 7), "")
	want := decode[testCompletion](t, b).text(t)
	_, b = ts.do(t, "POST", "/v1/completions", completion("A dog ran home.", 7), "")
	want2 := decode[testCompletion](t, b).text(t)
	wantJSON, _ := json.Marshal([]string{want, want2})

	infers := []struct {
		name     string
		body     any
		wantCode int
		check    func(t *testing.T, r kserveResponse, body []byte)
	}{
		{"text_input", map[string]any{"id": "req-1", "inputs": []any{
			map[string]any{"name": "text_input", "shape": []int{1}, "datatype": "BYTES", "data": []string{"Tell me about the sea."}},
			map[string]any{"name": "max_tokens", "shape": []int{1}, "datatype": "INT32", "data": []int{7}},
		}}, 200, func(t *testing.T, r kserveResponse, body []byte) {
			if r.ModelName != DefaultName || r.ModelVersion != "1" || r.ID != "req-1" || len(r.Outputs) != 1 {
				t.Fatalf("response %s", body)
			}
			o := r.Outputs[0]
			if o.Name != "text_output" || o.Datatype != "BYTES" || fmt.Sprint(o.Shape) != "[1]" || string(o.Data) != string(wantJSON[:len(wantJSON)-len(want2)-4])+"]" {
				t.Errorf("output %s %s %v %s; want text %q", o.Name, o.Datatype, o.Shape, o.Data, want)
			}
			if r.Parameters["completion_tokens"] != 7.0 || r.Parameters["finish_reason"] != "length" {
				t.Errorf("parameters %v", r.Parameters)
			}
		}},
		{"batch of two, max_tokens parameter", map[string]any{"parameters": map[string]any{"max_tokens": 7}, "inputs": []any{
			map[string]any{"name": "text_input", "shape": []int{2, 1}, "datatype": "BYTES", "data": [][]string{{"Tell me about the sea."}, {"A dog ran home."}}},
		}}, 200, func(t *testing.T, r kserveResponse, body []byte) {
			if len(r.Outputs) != 1 || string(r.Outputs[0].Data) != string(wantJSON) || fmt.Sprint(r.Outputs[0].Shape) != "[2]" {
				t.Errorf("response %s; want data %s", body, wantJSON)
			}
			if r.Parameters["completion_tokens"] != 14.0 {
				t.Errorf("parameters %v", r.Parameters)
			}
		}},
		{"input_ids", map[string]any{"inputs": []any{
			map[string]any{"name": "input_ids", "shape": []int{2, 3}, "datatype": "INT64", "data": []int{1, 40, 41, 1, 50, 51}},
			map[string]any{"name": "max_tokens", "shape": []int{1}, "datatype": "INT64", "data": []int{4}},
		}}, 200, func(t *testing.T, r kserveResponse, body []byte) {
			if len(r.Outputs) != 2 || r.Outputs[0].Name != "output_ids" || r.Outputs[1].Name != "text_output" {
				t.Fatalf("response %s", body)
			}
			ids := r.Outputs[0]
			var flat []int
			if err := json.Unmarshal(ids.Data, &flat); err != nil || ids.Datatype != "INT32" || fmt.Sprint(ids.Shape) != "[2 4]" || len(flat) != 8 {
				t.Errorf("output_ids %s %v %s", ids.Datatype, ids.Shape, ids.Data)
			}
		}},
		{"outputs picks", map[string]any{"outputs": []any{map[string]any{"name": "output_ids"}}, "inputs": []any{
			map[string]any{"name": "text_input", "shape": []int{1}, "datatype": "BYTES", "data": []string{"hi"}},
		}}, 200, func(t *testing.T, r kserveResponse, body []byte) {
			if len(r.Outputs) != 1 || r.Outputs[0].Name != "output_ids" || fmt.Sprint(r.Outputs[0].Shape) != fmt.Sprintf("[1 %d]", defaultMaxTokens) {
				t.Errorf("response %s", body)
			}
		}},
		{"bad JSON", `{"inputs":`, 400, nil},
		{"no inputs", map[string]any{"inputs": []any{}}, 400, nil},
		{"unknown input", map[string]any{"inputs": []any{map[string]any{"name": "pixels", "shape": []int{1}, "datatype": "FP32", "data": []float64{1}}}}, 400, nil},
		{"wrong datatype", map[string]any{"inputs": []any{map[string]any{"name": "text_input", "shape": []int{1}, "datatype": "FP32", "data": []float64{1}}}}, 400, nil},
		{"shape mismatch", map[string]any{"inputs": []any{map[string]any{"name": "text_input", "shape": []int{2}, "datatype": "BYTES", "data": []string{"a"}}}}, 400, nil},
		{"both inputs", map[string]any{"inputs": []any{
			map[string]any{"name": "text_input", "shape": []int{1}, "datatype": "BYTES", "data": []string{"a"}},
			map[string]any{"name": "input_ids", "shape": []int{1}, "datatype": "INT32", "data": []int{1}},
		}}, 400, nil},
		{"unknown output", map[string]any{"outputs": []any{map[string]any{"name": "logits"}}, "inputs": []any{
			map[string]any{"name": "text_input", "shape": []int{1}, "datatype": "BYTES", "data": []string{"a"}},
		}}, 400, nil},
	}
	for _, tt := range infers {
		t.Run("infer "+tt.name, func(t *testing.T) {
			code, b := ts.do(t, "POST", m+"/infer", tt.body, "")
			if code != tt.wantCode {
				t.Fatalf("status %d body %s; want %d", code, b, tt.wantCode)
			}
			if tt.check != nil {
				tt.check(t, decode[kserveResponse](t, b), b)
				return
			}
			if e := decode[map[string]any](t, b); len(e) != 1 || e["error"] == nil {
				t.Errorf("error body %s; want KServe's {\"error\": message}", b)
			}
		})
	}
	if code, b := ts.do(t, "POST", "/v2/models/other/infer", map[string]any{"inputs": []any{}}, ""); code != 404 {
		t.Errorf("infer on another model: %d %s", code, b)
	}
}

// TestLoading holds Run between listening and loading the model (the
// listening hook runs before the load) and checks what every endpoint says.
func TestLoading(t *testing.T) {
	dir := newModelDir(t, 1<<20)
	listening := make(chan string)
	release := make(chan struct{})
	cfg := Config{ModelDir: dir, Addr: "127.0.0.1:0", hooks: &hooks{listening: func(addr string) {
		listening <- addr
		<-release
	}}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	ready := make(chan string, 1)
	go func() { done <- Run(ctx, cfg, func(a string) { ready <- a }) }()
	ts := &testServer{url: "http://" + <-listening, client: &http.Client{Transport: &http.Transport{}}}
	defer ts.client.CloseIdleConnections()

	tests := []struct {
		method, path string
		body         any
		wantCode     int
		want         string
	}{
		{"GET", "/health", nil, 503, `{"status":"loading"}`},
		{"GET", "/v2/health/live", nil, 200, `{"live":true}`},
		{"GET", "/v2/health/ready", nil, 503, `{"ready":false}`},
		{"GET", "/v1/models", nil, 503, `"type":"server_error"`},
		{"POST", "/v1/completions", completion("hi", 1), 503, `{"error":{"message":"the model is still loading","type":"server_error","param":null,"code":null}}`},
		{"POST", "/v1/chat/completions", chat("hi", 1), 503, `the model is still loading`},
		{"POST", "/v1/completions", `{bad`, 400, `invalid JSON body`},
		{"GET", "/v2/models/" + DefaultName + "/ready", nil, 503, `{"error":"the model is still loading"}`},
		{"POST", "/v2/models/" + DefaultName + "/infer", map[string]any{"inputs": []any{}}, 503, `{"error":"the model is still loading"}`},
	}
	for _, tt := range tests {
		code, b := ts.do(t, tt.method, tt.path, tt.body, "")
		if code != tt.wantCode || !strings.Contains(string(b), tt.want) {
			t.Errorf("%s %s while loading: %d %s; want %d and %s", tt.method, tt.path, code, b, tt.wantCode, tt.want)
		}
	}
	close(release)
	<-ready
	if code, b := ts.do(t, "GET", "/health", nil, ""); code != 200 || string(b) != `{"status":"ready"}`+"\n" {
		t.Errorf("GET /health when ready: %d %s", code, b)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestStopWhileLoading cancels Run while the model loads: a clean stop.
func TestStopWhileLoading(t *testing.T) {
	dir := newModelDir(t, 1<<20)
	ctx, cancel := context.WithCancel(context.Background())
	cfg := Config{ModelDir: dir, Addr: "127.0.0.1:0", hooks: &hooks{listening: func(string) { cancel() }}}
	err := Run(ctx, cfg, func(string) { t.Error("ready called for a stopped server") })
	if err != nil {
		t.Errorf("Run: %v", err)
	}
}

// recorder collects the tags (X-Test headers) of requests as hooks see them.
type recorder struct {
	mu      sync.Mutex
	events  []string
	changed chan struct{} // receives after each event
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1000)} }

func (r *recorder) add(event string) {
	r.mu.Lock()
	r.events = append(r.events, event)
	r.mu.Unlock()
	r.changed <- struct{}{}
}

func (r *recorder) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

// waitFor blocks until event has been recorded.
func (r *recorder) waitFor(t *testing.T, event string) {
	t.Helper()
	for {
		for _, e := range r.snapshot() {
			if e == event {
				return
			}
		}
		<-r.changed
	}
}

func filter(events []string, prefix string) []string {
	var out []string
	for _, e := range events {
		if s, ok := strings.CutPrefix(e, prefix); ok {
			out = append(out, s)
		}
	}
	return out
}

// TestFIFO holds the only slot with request a, queues b, c, d and e in that
// order, lets c's client give up, and checks that the rest are let in
// strictly in arrival order.
func TestFIFO(t *testing.T) {
	rec := newRecorder()
	hold := make(chan struct{})
	h := &hooks{
		queued:   func(r *http.Request) { rec.add("queued " + r.Header.Get("X-Test")) },
		acquired: func(r *http.Request) { rec.add("acquired " + r.Header.Get("X-Test")) },
		gaveUp:   func(r *http.Request, _ error) { rec.add("gave up " + r.Header.Get("X-Test")) },
		token: func(r *http.Request, i int) {
			if r.Header.Get("X-Test") == "a" && i == 0 {
				<-hold
			}
		},
		finished: func(r *http.Request, reason string, _ int) {
			rec.add("finished " + r.Header.Get("X-Test") + " " + reason)
		},
	}
	ts := startServer(t, Config{Parallelism: 1, hooks: h})

	var wg sync.WaitGroup
	codes := make(map[string]int)
	var mu sync.Mutex
	send := func(ctx context.Context, tag string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code := -1
			resp, err := ts.send(ctx, "POST", "/v1/completions", completion("hi "+tag, 2), tag)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				code = resp.StatusCode
			}
			mu.Lock()
			codes[tag] = code
			mu.Unlock()
		}()
	}
	send(context.Background(), "a")
	rec.waitFor(t, "acquired a")
	cctx, giveUp := context.WithCancel(context.Background())
	for _, tag := range []string{"b", "c", "d", "e"} {
		ctx := context.Background()
		if tag == "c" {
			ctx = cctx
		}
		send(ctx, tag)
		rec.waitFor(t, "queued "+tag)
	}
	giveUp()
	rec.waitFor(t, "gave up c")
	close(hold)
	wg.Wait()

	events := rec.snapshot()
	if got := strings.Join(filter(events, "acquired "), " "); got != "a b d e" {
		t.Errorf("acquired in order %q, want \"a b d e\" (events %q)", got, events)
	}
	for tag, want := range map[string]int{"a": 200, "b": 200, "c": -1, "d": 200, "e": 200} {
		if codes[tag] != want {
			t.Errorf("request %s: status %d, want %d", tag, codes[tag], want)
		}
	}
}

// testLogger logs to t and fails the test on an Error record, which is how
// http.Server reports a handler's panic.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(&testHandler{t: t, h: slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})})
}

type testHandler struct {
	t *testing.T
	h slog.Handler
}

func (h *testHandler) Enabled(ctx context.Context, l slog.Level) bool { return true }
func (h *testHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		h.t.Errorf("error logged: %s", r.Message)
	}
	return h.h.Handle(ctx, r)
}
func (h *testHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &testHandler{t: h.t, h: h.h.WithAttrs(as)}
}
func (h *testHandler) WithGroup(g string) slog.Handler {
	return &testHandler{t: h.t, h: h.h.WithGroup(g)}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// TestDrain stops the server while a stream is in flight: health turns 503
// at once, requests are still served, the stream finishes, Run returns nil.
func TestDrain(t *testing.T) {
	rec := newRecorder()
	hold := make(chan struct{})
	var ts *testServer
	type answer struct {
		code int
		body string
		err  error
	}
	during := make(map[string]answer)
	ask := func(method, path string, body any) answer {
		resp, err := ts.send(context.Background(), method, path, body, "during")
		if err != nil {
			return answer{err: err}
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return answer{resp.StatusCode, string(b), err}
	}
	h := &hooks{
		token: func(r *http.Request, i int) {
			if r.Header.Get("X-Test") == "stream" && i == 2 {
				rec.add("stream at 2")
				<-hold
			}
		},
		draining: func(http.Handler) {
			during["health"] = ask("GET", "/health", nil)
			during["ready"] = ask("GET", "/v2/health/ready", nil)
			during["completion"] = ask("POST", "/v1/completions", completion("hi", 3))
			close(hold)
		},
	}
	ts = startServer(t, Config{Parallelism: 2, Logger: testLogger(t), hooks: h})

	streamed := make(chan answer, 1)
	go func() {
		resp, err := ts.send(context.Background(), "POST", "/v1/chat/completions", with(chat("hi", 6), "stream", true), "stream")
		if err != nil {
			streamed <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		streamed <- answer{resp.StatusCode, string(b), err}
	}()
	rec.waitFor(t, "stream at 2")
	if err := ts.stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	for name, want := range map[string]answer{
		"health":     {503, `{"status":"draining"}` + "\n", nil},
		"ready":      {503, `{"ready":false}` + "\n", nil},
		"completion": {200, "", nil},
	} {
		got := during[name]
		if got.err != nil || got.code != want.code || (want.body != "" && got.body != want.body) {
			t.Errorf("%s while draining: %d %q %v; want %d %q", name, got.code, got.body, got.err, want.code, want.body)
		}
	}
	a := <-streamed
	if a.err != nil || a.code != 200 {
		t.Fatalf("stream: %d %v", a.code, a.err)
	}
	if chunks := sseChunks(t, []byte(a.body)); len(chunks) != 8 || chunks[7].finish() != "length" {
		t.Errorf("stream cut short: %d chunks:\n%s", len(chunks), a.body)
	}
	if _, err := ts.send(context.Background(), "GET", "/health", nil, ""); err == nil {
		t.Error("a request after Run returned was answered")
	}
}

// TestDrainTimeout holds a request past the drain timeout: it is cut off
// and Run says so.
func TestDrainTimeout(t *testing.T) {
	rec := newRecorder()
	h := &hooks{
		token: func(r *http.Request, i int) {
			rec.add("held")
			<-r.Context().Done() // until the server cuts it off
		},
		finished: func(r *http.Request, reason string, tokens int) {
			rec.add(fmt.Sprintf("finished %s %d", reason, tokens))
		},
	}
	ts := startServer(t, Config{DrainTimeout: 1, Logger: testLogger(t), hooks: h})
	done := make(chan error, 1)
	go func() {
		resp, err := ts.send(context.Background(), "POST", "/v1/completions", completion("hi", 3), "held")
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	rec.waitFor(t, "held")
	err := ts.stop()
	if err == nil || !strings.Contains(err.Error(), "modelserver: drain: requests cut off after 1ns") {
		t.Errorf("Run: %v; want the drain cut off", err)
	}
	rec.waitFor(t, "finished canceled 0")
	if err := <-done; err == nil {
		t.Error("the cut-off request got a response")
	}
}

// TestClientGoneStopsGeneration: a streaming client that goes away stops
// generation within a token.
func TestClientGoneStopsGeneration(t *testing.T) {
	rec := newRecorder()
	h := &hooks{
		token: func(r *http.Request, i int) {
			if i == 3 {
				rec.add("at 3")
				<-r.Context().Done()
			}
		},
		finished: func(r *http.Request, reason string, tokens int) {
			rec.add(fmt.Sprintf("finished %s %d", reason, tokens))
		},
	}
	ts := startServer(t, Config{Logger: testLogger(t), hooks: h})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp, err := ts.send(ctx, "POST", "/v1/completions", with(completion("hi", 100), "stream", true), "")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rec.waitFor(t, "at 3")
	cancel()
	rec.waitFor(t, "finished canceled 3")
	// The slot is free again.
	if code, b := ts.do(t, "POST", "/v1/completions", completion("hi", 2), ""); code != 200 {
		t.Errorf("after a client left: %d %s", code, b)
	}
}

// TestParallelism lets Parallelism requests generate at once and queues the
// next.
func TestParallelism(t *testing.T) {
	rec := newRecorder()
	release := make(chan struct{})
	h := &hooks{
		queued:   func(r *http.Request) { rec.add("queued " + r.Header.Get("X-Test")) },
		acquired: func(r *http.Request) { rec.add("acquired " + r.Header.Get("X-Test")) },
		token: func(r *http.Request, i int) {
			if i == 0 && r.Header.Get("X-Test") != "4" {
				<-release
			}
		},
	}
	ts := startServer(t, Config{Parallelism: 3, Logger: testLogger(t), hooks: h})
	var wg sync.WaitGroup
	for _, tag := range []string{"1", "2", "3", "4"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if resp, err := ts.send(context.Background(), "POST", "/v1/completions", completion("hi", 1), tag); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
		if tag != "4" {
			rec.waitFor(t, "acquired "+tag) // three generate at once
		}
	}
	rec.waitFor(t, "queued 4")
	close(release)
	wg.Wait()
	if got := filter(rec.snapshot(), "queued "); strings.Join(got, " ") != "4" {
		t.Errorf("queued: %q, want only 4", got)
	}
}

func TestGate(t *testing.T) {
	g := newGate(1)
	ctx := context.Background()
	if err := g.acquire(ctx, func() { t.Error("queued with a free slot") }); err != nil {
		t.Fatal(err)
	}
	order := make(chan int, 3)
	queued := make(chan struct{})
	cctx, cancel := context.WithCancel(ctx)
	errs := make(chan error, 3)
	for i := range 3 {
		c := ctx
		if i == 1 {
			c = cctx
		}
		go func() {
			err := g.acquire(c, func() { queued <- struct{}{} })
			if err == nil {
				order <- i
				g.release()
			}
			errs <- err
		}()
		<-queued
	}
	if n := g.waiting(); n != 3 {
		t.Errorf("waiting %d, want 3", n)
	}
	cancel()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Errorf("canceled waiter: %v", err)
	}
	g.release()
	for _, want := range []int{0, 2} {
		if got := <-order; got != want {
			t.Errorf("let in %d, want %d", got, want)
		}
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if g.free != 1 || g.waiting() != 0 {
		t.Errorf("free %d waiting %d after all left, want 1 0", g.free, g.waiting())
	}
}

// TestH2C speaks HTTP/2 without TLS to the server, streaming included.
func TestH2C(t *testing.T) {
	ts := startServer(t, Config{})
	var h2 http.Protocols
	h2.SetUnencryptedHTTP2(true)
	ts.client = &http.Client{Transport: &http.Transport{Protocols: &h2}}
	for _, stream := range []bool{false, true} {
		resp, err := ts.send(context.Background(), "POST", "/v1/chat/completions", with(chat("hi", 4), "stream", stream), "")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			t.Fatalf("stream=%v: %s %d %v: %s", stream, resp.Proto, resp.StatusCode, err, b)
		}
		if stream {
			if n := len(sseChunks(t, b)); n != 6 {
				t.Errorf("%d chunks over h2c, want 6", n)
			}
		}
	}
}
