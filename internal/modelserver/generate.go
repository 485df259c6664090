package modelserver

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// errClientGone reports that writing to the client failed mid-stream.
var errClientGone = errors.New("client gone")

// job is the work of one inference request: its prompts run one after the
// other while the request holds one slot.
type job struct {
	prompts   []Prompt
	maxTokens int
	stop      []string
	chat      bool // no space before the first word
	keepIDs   bool // record the generated token ids
}

// fitContext checks that every prompt of j and its completion fit in the
// model's context window of maxContext tokens, as vLLM does: a prompt that
// fills it, or an explicit max tokens that overflows it, is an error; a
// default max tokens is lowered to fit.
func fitContext(j *job, explicit bool, param string) *httpError {
	for _, p := range j.prompts {
		n := len(p.IDs)
		switch {
		case n >= maxContext:
			return &httpError{status: http.StatusBadRequest, param: "prompt", code: "context_length_exceeded",
				msg: fmt.Sprintf("This model's maximum context length is %d tokens. However, your prompt has %d tokens, leaving no room for the completion.", maxContext, n)}
		case n+j.maxTokens <= maxContext:
		case explicit:
			return &httpError{status: http.StatusBadRequest, param: param, code: "context_length_exceeded",
				msg: fmt.Sprintf("This model's maximum context length is %d tokens. However, you requested %d tokens (%d in the prompt, %d in the completion). Please reduce the length of the prompt or the completion.",
					maxContext, n+j.maxTokens, n, j.maxTokens)}
		default:
			j.maxTokens = maxContext - n
		}
	}
	return nil
}

// result is the outcome of one prompt of a job.
type result struct {
	text                           string // when the emitter takes no pieces
	ids                            []int  // when job.keepIDs
	promptTokens, completionTokens int
	finish                         string // "length" or "stop"
}

// emitter receives a job's progress; any func may be nil. An error from one
// ends the job with that error.
type emitter struct {
	start func() error                   // a slot is held: generation begins
	piece func(i int, text string) error // prompt i produced text; nil to collect it in result.text
	end   func(i int, res result) error  // prompt i is done
}

// generate waits for a slot in FIFO order, then generates every prompt of j
// until max tokens, a stop sequence, or the request's end.
func (s *server) generate(r *http.Request, m *Model, j job, e emitter) ([]result, error) {
	if !s.enter() {
		return nil, errStopping
	}
	defer s.inflight.Done()
	ctx := r.Context()
	var waiting func()
	if f := s.hooks.queued; f != nil {
		waiting = func() { f(r) }
	}
	if err := s.gate.acquire(ctx, waiting); err != nil {
		if f := s.hooks.gaveUp; f != nil {
			f(r, err)
		}
		return nil, err
	}
	defer s.gate.release()
	if f := s.hooks.acquired; f != nil {
		f(r)
	}
	if e.start != nil {
		if err := e.start(); err != nil {
			return nil, err
		}
	}
	results := make([]result, len(j.prompts))
	for i, p := range j.prompts {
		res, err := s.generateOne(r, m, p, j, func(text string) error { return e.piece(i, text) }, e.piece == nil)
		if f := s.hooks.finished; f != nil {
			reason := res.finish
			if err != nil {
				reason = "canceled"
			}
			f(r, reason, res.completionTokens)
		}
		if err != nil {
			return nil, err
		}
		if e.end != nil {
			if err := e.end(i, res); err != nil {
				return nil, err
			}
		}
		results[i] = res
	}
	return results, nil
}

func (s *server) generateOne(r *http.Request, m *Model, p Prompt, j job, emit func(string) error, collect bool) (result, error) {
	ctx := r.Context()
	res := result{promptTokens: len(p.IDs), finish: "length"}
	var text strings.Builder
	out := func(piece string) error {
		switch {
		case piece == "":
			return nil
		case collect:
			text.WriteString(piece)
			return nil
		}
		return emit(piece)
	}
	seq := m.NewSequence(p)
	st := stopper{stops: j.stop}
	for n := 0; n < j.maxTokens; n++ {
		if f := s.hooks.token; f != nil {
			f(r, n)
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
		id, piece := seq.Next()
		res.completionTokens++
		if j.keepIDs {
			res.ids = append(res.ids, id)
		}
		if n == 0 && j.chat {
			piece = strings.TrimPrefix(piece, " ")
		}
		piece, stopped := st.feed(piece)
		if err := out(piece); err != nil {
			return res, err
		}
		if stopped {
			res.finish = "stop"
			break
		}
	}
	if err := out(st.flush()); err != nil {
		return res, err
	}
	res.text = text.String()
	return res, nil
}

// stopper finds stop sequences in generated text, holding back text that
// may be the start of one so that a stop sequence is never sent.
type stopper struct {
	stops []string
	held  string
}

// feed takes the next piece of text and returns what may be sent now, and
// whether a stop sequence was reached (what follows it is dropped).
func (s *stopper) feed(piece string) (string, bool) {
	if len(s.stops) == 0 {
		return piece, false
	}
	buf := s.held + piece
	cut := -1
	for _, stop := range s.stops {
		if i := strings.Index(buf, stop); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut >= 0 {
		s.held = ""
		return buf[:cut], true
	}
	keep := 0
	for _, stop := range s.stops {
		for k := min(len(stop)-1, len(buf)); k > keep; k-- {
			if strings.HasSuffix(buf, stop[:k]) {
				keep = k
				break
			}
		}
	}
	s.held = buf[len(buf)-keep:]
	return buf[:len(buf)-keep], false
}

// flush returns the text held back at the end of generation.
func (s *stopper) flush() string {
	h := s.held
	s.held = ""
	return h
}
