package modelserver

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"
)

// The OpenAI-compatible API: /v1/models, /v1/completions and
// /v1/chat/completions, with and without streaming. Sampling parameters
// (temperature, top_p, seed, penalties, logprobs, user, ...) are accepted
// and ignored: decoding is deterministic, the prompt itself seeding the
// sampler, so the same request gives the same text. n must be 1 and echo
// false.

type completionRequest struct {
	Model         string          `json:"model"`
	Prompt        json.RawMessage `json:"prompt"`
	MaxTokens     *int            `json:"max_tokens"`
	Stream        bool            `json:"stream"`
	StreamOptions *streamOptions  `json:"stream_options"`
	Stop          stringList      `json:"stop"`
	N             *int            `json:"n"`
	Echo          bool            `json:"echo"`
}

type chatRequest struct {
	Model               string         `json:"model"`
	Messages            []chatMessage  `json:"messages"`
	MaxTokens           *int           `json:"max_tokens"`
	MaxCompletionTokens *int           `json:"max_completion_tokens"`
	Stream              bool           `json:"stream"`
	StreamOptions       *streamOptions `json:"stream_options"`
	Stop                stringList     `json:"stop"`
	N                   *int           `json:"n"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// stringList is a JSON string or array of strings.
type stringList []string

func (l *stringList) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*l = []string{s}
		return nil
	}
	var ss []string
	if err := json.Unmarshal(b, &ss); err != nil {
		return errors.New("must be a string or an array of strings")
	}
	*l = ss
	return nil
}

type completionResponse struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   *usage             `json:"usage,omitempty"`
}

type completionChoice struct {
	Index        int     `json:"index"`
	Text         string  `json:"text"`
	Logprobs     any     `json:"logprobs"`
	FinishReason *string `json:"finish_reason"`
}

type chatResponse struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   *usage       `json:"usage,omitempty"`
}

type chatChoice struct {
	Index        int          `json:"index"`
	Message      *chatContent `json:"message,omitempty"`
	Delta        *chatContent `json:"delta,omitempty"`
	Logprobs     any          `json:"logprobs"`
	FinishReason *string      `json:"finish_reason"`
}

type chatContent struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

func usageOf(results []result) *usage {
	var u usage
	for _, r := range results {
		u.PromptTokens += r.promptTokens
		u.CompletionTokens += r.completionTokens
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return &u
}

func writeOpenAIError(w http.ResponseWriter, e *httpError) {
	typ := "invalid_request_error"
	switch {
	case e.status >= 500:
		typ = "server_error"
	case e.status == http.StatusNotFound && e.code == "":
		typ = "not_found_error"
	}
	body := struct {
		Error struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
			Code    *string `json:"code"`
		} `json:"error"`
	}{}
	body.Error.Message, body.Error.Type = e.msg, typ
	if e.param != "" {
		body.Error.Param = &e.param
	}
	if e.code != "" {
		body.Error.Code = &e.code
	}
	if e.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, e.status, body)
}

func (s *server) handleModels(w http.ResponseWriter, r *http.Request) {
	if _, _, err := s.loaded(""); err != nil {
		writeOpenAIError(w, err)
		return
	}
	data := make([]any, len(s.names))
	for i, name := range s.names {
		data[i] = s.modelObject(name)
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

func (s *server) handleModel(w http.ResponseWriter, r *http.Request) {
	_, name, err := s.loaded(r.PathValue("model"))
	if err != nil {
		writeOpenAIError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.modelObject(name))
}

func (s *server) modelObject(name string) map[string]any {
	return map[string]any{"id": name, "object": "model", "created": s.created, "owned_by": "infera",
		"max_model_len": maxContext}
}

// maxTokens resolves a request's max_tokens.
func (s *server) maxTokens(v *int, param string) (int, *httpError) {
	switch {
	case v == nil:
		return min(defaultMaxTokens, s.cfg.MaxTokens), nil
	case *v < 1 || *v > s.cfg.MaxTokens:
		return 0, errBadRequest(param, "%s must be between 1 and %d, got %d", param, s.cfg.MaxTokens, *v)
	}
	return *v, nil
}

func checkN(n *int) *httpError {
	if n != nil && *n != 1 {
		return errBadRequest("n", "n must be 1: decoding is deterministic, so every choice would be the same")
	}
	return nil
}

func checkStop(stop stringList) ([]string, *httpError) {
	var out []string
	for _, s := range stop {
		if s != "" {
			out = append(out, s)
		}
	}
	if len(out) > 16 {
		return nil, errBadRequest("stop", "at most 16 stop sequences, got %d", len(out))
	}
	return out, nil
}

// acceptOpenAI decodes an OpenAI request into req, finds the model it names (model reads it
// after decoding) and builds its job; on any error it writes OpenAI's error and returns false.
// The name returned is the one to answer with: the request's, or the primary name if it gave
// none.
func acceptOpenAI[Req any](s *server, w http.ResponseWriter, r *http.Request, req *Req, model func() string,
	build func(*Model, *Req) (job, *httpError)) (*Model, string, job, bool) {
	if err := decodeBody(w, r, req); err != nil {
		writeOpenAIError(w, err)
		return nil, "", job{}, false
	}
	m, name, herr := s.loaded(model())
	if herr != nil {
		writeOpenAIError(w, herr)
		return nil, "", job{}, false
	}
	j, herr := build(m, req)
	if herr != nil {
		writeOpenAIError(w, herr)
		return nil, "", job{}, false
	}
	return m, name, j, true
}

// generateAll runs a non-streamed job; on failure it writes OpenAI's error (unless the client
// has gone) and returns false.
func (s *server) generateAll(w http.ResponseWriter, r *http.Request, m *Model, j job) ([]result, bool) {
	results, err := s.generate(r, m, j, emitter{})
	if err != nil {
		herr := statusOf(err)
		if herr == nil {
			abortUnanswered()
		}
		writeOpenAIError(w, herr)
		return nil, false
	}
	return results, true
}

func (s *server) handleCompletions(w http.ResponseWriter, r *http.Request) {
	var req completionRequest
	m, name, j, ok := acceptOpenAI(s, w, r, &req, func() string { return req.Model }, s.completionJob)
	if !ok {
		return
	}
	resp := completionResponse{ID: "cmpl-" + rand.Text(), Object: "text_completion", Created: time.Now().Unix(), Model: name}
	if !req.Stream {
		results, ok := s.generateAll(w, r, m, j)
		if !ok {
			return
		}
		for i, res := range results {
			resp.Choices = append(resp.Choices, completionChoice{Index: i, Text: res.text, FinishReason: &res.finish})
		}
		resp.Usage = usageOf(results)
		writeJSON(w, http.StatusOK, resp)
		return
	}

	var ev *eventStream
	resp.Choices = make([]completionChoice, 1)
	results, err := s.generate(r, m, j, emitter{
		start: func() error { ev = startEvents(w); return nil },
		piece: func(i int, text string) error {
			resp.Choices[0] = completionChoice{Index: i, Text: text}
			return ev.send(&resp)
		},
		end: func(i int, res result) error {
			resp.Choices[0] = completionChoice{Index: i, FinishReason: &res.finish}
			return ev.send(&resp)
		},
	})
	s.endStream(w, ev, err, func() any {
		if req.StreamOptions == nil || !req.StreamOptions.IncludeUsage {
			return nil
		}
		resp.Choices, resp.Usage = []completionChoice{}, usageOf(results)
		return &resp
	})
}

func (s *server) completionJob(m *Model, req *completionRequest) (job, *httpError) {
	var j job
	var herr *httpError
	if j.maxTokens, herr = s.maxTokens(req.MaxTokens, "max_tokens"); herr != nil {
		return j, herr
	}
	if herr = checkN(req.N); herr != nil {
		return j, herr
	}
	if req.Echo {
		return j, errBadRequest("echo", "echo is not supported")
	}
	if j.stop, herr = checkStop(req.Stop); herr != nil {
		return j, herr
	}
	if j.prompts, herr = parsePrompts(m, req.Prompt); herr != nil {
		return j, herr
	}
	return j, fitContext(&j, req.MaxTokens != nil, "max_tokens")
}

// parsePrompts reads an OpenAI prompt: a string, an array of strings, an
// array of token ids, or an array of arrays of token ids.
func parsePrompts(m *Model, raw json.RawMessage) ([]Prompt, *httpError) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, errBadRequest("prompt", "prompt is required")
	}
	var (
		text  string
		texts []string
		ids   []int
		batch [][]int
	)
	var ps []Prompt
	switch {
	case json.Unmarshal(raw, &text) == nil:
		return []Prompt{m.Encode(text)}, nil
	case json.Unmarshal(raw, &texts) == nil && len(texts) > 0:
		for _, t := range texts {
			ps = append(ps, m.Encode(t))
		}
	case json.Unmarshal(raw, &ids) == nil && len(ids) > 0:
		batch = [][]int{ids}
	case json.Unmarshal(raw, &batch) == nil && len(batch) > 0:
	default:
		return nil, errBadRequest("prompt", "prompt must be a string, an array of strings, an array of token ids or an array of arrays of token ids")
	}
	for _, ids := range batch {
		p, err := m.EncodeIDs(ids)
		if err != nil {
			return nil, errBadRequest("prompt", "prompt: %v", err)
		}
		ps = append(ps, p)
	}
	if len(ps) > maxBatch {
		return nil, errBadRequest("prompt", "at most %d prompts in one request, got %d", maxBatch, len(ps))
	}
	return ps, nil
}

func (s *server) handleChatCompletions(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	m, name, j, ok := acceptOpenAI(s, w, r, &req, func() string { return req.Model }, s.chatJob)
	if !ok {
		return
	}
	resp := chatResponse{ID: "chatcmpl-" + rand.Text(), Object: "chat.completion", Created: time.Now().Unix(), Model: name}
	if !req.Stream {
		results, ok := s.generateAll(w, r, m, j)
		if !ok {
			return
		}
		res := results[0]
		resp.Choices = []chatChoice{{Message: &chatContent{Role: "assistant", Content: &res.text}, FinishReason: &res.finish}}
		resp.Usage = usageOf(results)
		writeJSON(w, http.StatusOK, resp)
		return
	}

	var ev *eventStream
	resp.Object = "chat.completion.chunk"
	resp.Choices = make([]chatChoice, 1)
	results, err := s.generate(r, m, j, emitter{
		start: func() error {
			ev = startEvents(w)
			empty := ""
			resp.Choices[0] = chatChoice{Delta: &chatContent{Role: "assistant", Content: &empty}}
			return ev.send(&resp)
		},
		piece: func(_ int, text string) error {
			resp.Choices[0] = chatChoice{Delta: &chatContent{Content: &text}}
			return ev.send(&resp)
		},
		end: func(_ int, res result) error {
			resp.Choices[0] = chatChoice{Delta: &chatContent{}, FinishReason: &res.finish}
			return ev.send(&resp)
		},
	})
	s.endStream(w, ev, err, func() any {
		if req.StreamOptions == nil || !req.StreamOptions.IncludeUsage {
			return nil
		}
		resp.Choices, resp.Usage = []chatChoice{}, usageOf(results)
		return &resp
	})
}

func (s *server) chatJob(m *Model, req *chatRequest) (job, *httpError) {
	j := job{chat: true}
	var herr *httpError
	maxTok, param := req.MaxTokens, "max_tokens"
	if req.MaxCompletionTokens != nil {
		maxTok, param = req.MaxCompletionTokens, "max_completion_tokens"
	}
	if j.maxTokens, herr = s.maxTokens(maxTok, param); herr != nil {
		return j, herr
	}
	if herr = checkN(req.N); herr != nil {
		return j, herr
	}
	if j.stop, herr = checkStop(req.Stop); herr != nil {
		return j, herr
	}
	if len(req.Messages) == 0 {
		return j, errBadRequest("messages", "messages must not be empty")
	}
	// The chat template: one "role: content" line per message, then the
	// assistant's turn.
	var b strings.Builder
	for i, msg := range req.Messages {
		if msg.Role == "" {
			return j, errBadRequest("messages", "messages[%d].role is required", i)
		}
		text, err := messageText(msg.Content)
		if err != nil {
			return j, errBadRequest("messages", "messages[%d].content: %v", i, err)
		}
		b.WriteString(msg.Role + ": " + text + "\n")
	}
	b.WriteString("assistant:")
	j.prompts = []Prompt{m.Encode(b.String())}
	return j, fitContext(&j, maxTok != nil, param)
}

// messageText reads a chat message's content: a string, null, or an array
// of text parts.
func messageText(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", errors.New("must be a string or an array of content parts")
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			return "", errors.New("only text content parts are supported, got type " + p.Type)
		}
		b.WriteString(p.Text)
	}
	return b.String(), nil
}

// endStream finishes a streamed response: the error, if one happened before
// the stream started; else the usage chunk, if last returns one, and [DONE].
func (s *server) endStream(w http.ResponseWriter, ev *eventStream, err error, last func() any) {
	if err != nil {
		switch herr := statusOf(err); {
		case herr == nil:
			abortUnanswered() // the client is gone or was cut off: no clean end of stream
		case ev == nil:
			writeOpenAIError(w, herr)
		}
		return // mid-stream: an error after the first event
	}
	if v := last(); v != nil {
		if ev.send(v) != nil {
			return
		}
	}
	ev.done()
}

// eventStream writes server-sent events, flushing each at once.
type eventStream struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	buf bytes.Buffer
}

func startEvents(w http.ResponseWriter) *eventStream {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	ev := &eventStream{w: w, rc: http.NewResponseController(w)}
	_ = ev.rc.Flush() // headers out now; a failure shows on the first send
	return ev
}

// send writes v as one "data:" event.
func (e *eventStream) send(v any) error {
	e.buf.Reset()
	e.buf.WriteString("data: ")
	enc := json.NewEncoder(&e.buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	e.buf.WriteString("\n") // Encode ended the line; a blank line ends the event
	return e.write()
}

func (e *eventStream) done() {
	e.buf.Reset()
	e.buf.WriteString("data: [DONE]\n\n")
	_ = e.write()
}

func (e *eventStream) write() error {
	if _, err := e.w.Write(e.buf.Bytes()); err != nil {
		return errClientGone
	}
	if err := e.rc.Flush(); err != nil {
		return errClientGone
	}
	return nil
}
