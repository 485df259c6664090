package modelserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
)

// The KServe v2 open inference protocol, REST/JSON. Inputs the infer
// endpoint accepts (exactly one of text_input and input_ids):
//
//	text_input  BYTES         shape [B] (any shape of B elements): B prompts, B <= 64
//	input_ids   INT32|INT64   shape [N] (one prompt) or [B, N] (B prompts of N ids)
//	max_tokens  INT32|INT64   one element, optional; or parameters.max_tokens
//
// Outputs: text_output (BYTES, shape [B]) and output_ids (INT32, shape [B, M]),
// by default text_output for text_input and both for input_ids; "outputs"
// in the request picks among them. The response's parameters hold
// prompt_tokens, completion_tokens and finish_reason. The binary tensor data
// extension and other inputs, datatypes or outputs are answered 400.

const modelVersion = "1"

type tensorMetadata struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

type inferRequest struct {
	ID         string                     `json:"id,omitempty"`
	Parameters map[string]json.RawMessage `json:"parameters,omitempty"`
	Inputs     []inferInput               `json:"inputs"`
	Outputs    []struct {
		Name string `json:"name"`
	} `json:"outputs,omitempty"`
}

type inferInput struct {
	Name       string                     `json:"name"`
	Shape      []int64                    `json:"shape"`
	Datatype   string                     `json:"datatype"`
	Parameters map[string]json.RawMessage `json:"parameters,omitempty"`
	Data       json.RawMessage            `json:"data"`
}

type inferOutput struct {
	Name     string  `json:"name"`
	Shape    []int64 `json:"shape"`
	Datatype string  `json:"datatype"`
	Data     any     `json:"data"`
}

type inferResponse struct {
	ModelName    string         `json:"model_name"`
	ModelVersion string         `json:"model_version"`
	ID           string         `json:"id,omitempty"`
	Parameters   map[string]any `json:"parameters"`
	Outputs      []inferOutput  `json:"outputs"`
}

func writeKServeError(w http.ResponseWriter, e *httpError) {
	if e.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, e.status, map[string]string{"error": e.msg})
}

func (s *server) handleServerMetadata(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"name": "infera-model-server", "version": "1", "extensions": []string{}})
}

func (s *server) handleLive(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]bool{"live": true})
}

func (s *server) handleReady(w http.ResponseWriter, r *http.Request) {
	ready := s.state() == "ready"
	code := http.StatusOK
	if !ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]bool{"ready": ready})
}

// kserveModel returns the model the path names, with its version, if any,
// and the name it was asked by.
func (s *server) kserveModel(r *http.Request) (*Model, string, *httpError) {
	name := r.PathValue("model")
	m, name, herr := s.loaded(name)
	if herr != nil {
		return nil, "", herr
	}
	if v := r.PathValue("version"); v != "" && v != modelVersion {
		return nil, "", &httpError{status: http.StatusNotFound, msg: fmt.Sprintf("model %q has no version %q, only %q", name, v, modelVersion)}
	}
	return m, name, nil
}

// handleModelMetadata answers the v2 model metadata. Its optional
// "parameters" (flat, string, number or boolean values, as the protocol's
// $parameters are) tell how the model was loaded: load_method ("read" or
// "mmap"), load_parallelism, load_bytes, load_seconds and load_mb_per_s
// (10^6 bytes a second), verified, and served_names (comma-separated,
// primary first).
func (s *server) handleModelMetadata(w http.ResponseWriter, r *http.Request) {
	m, name, herr := s.kserveModel(r)
	if herr != nil {
		writeKServeError(w, herr)
		return
	}
	st := m.LoadStats()
	writeJSON(w, http.StatusOK, map[string]any{
		"name":     name,
		"versions": []string{modelVersion},
		"platform": "infera-synthetic",
		"inputs": []tensorMetadata{
			{Name: "text_input", Datatype: "BYTES", Shape: []int64{-1}},
			{Name: "input_ids", Datatype: "INT32", Shape: []int64{-1, -1}},
			{Name: "max_tokens", Datatype: "INT32", Shape: []int64{1}},
		},
		"outputs": []tensorMetadata{
			{Name: "text_output", Datatype: "BYTES", Shape: []int64{-1}},
			{Name: "output_ids", Datatype: "INT32", Shape: []int64{-1, -1}},
		},
		"parameters": map[string]any{
			"load_method":      st.Method,
			"load_parallelism": st.Parallelism,
			"load_bytes":       st.Bytes,
			"load_seconds":     st.Duration.Seconds(),
			"load_mb_per_s":    st.MBPerSecond(),
			"verified":         s.cfg.Verify,
			"served_names":     strings.Join(s.names, ","),
		},
	})
}

func (s *server) handleModelReady(w http.ResponseWriter, r *http.Request) {
	_, name, herr := s.kserveModel(r)
	if herr != nil {
		writeKServeError(w, herr)
		return
	}
	ready := s.state() == "ready"
	code := http.StatusOK
	if !ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"name": name, "ready": ready})
}

func (s *server) handleInfer(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Inference-Header-Content-Length") != "" {
		writeKServeError(w, errBadRequest("", "the binary tensor data extension is not supported; send JSON data"))
		return
	}
	var req inferRequest
	if herr := decodeBody(w, r, &req); herr != nil {
		writeKServeError(w, herr)
		return
	}
	m, name, herr := s.kserveModel(r)
	if herr != nil {
		writeKServeError(w, herr)
		return
	}
	j, outputs, herr := s.inferJob(m, &req)
	if herr != nil {
		writeKServeError(w, herr)
		return
	}
	results, err := s.generate(r, m, j, emitter{})
	if err != nil {
		herr := statusOf(err)
		if herr == nil {
			abortUnanswered()
		}
		writeKServeError(w, herr)
		return
	}

	resp := inferResponse{ModelName: name, ModelVersion: modelVersion, ID: req.ID}
	u := usageOf(results)
	resp.Parameters = map[string]any{
		"prompt_tokens": u.PromptTokens, "completion_tokens": u.CompletionTokens, "finish_reason": results[0].finish,
	}
	for _, name := range outputs {
		switch name {
		case "text_output":
			texts := make([]string, len(results))
			for i, res := range results {
				texts[i] = res.text
			}
			resp.Outputs = append(resp.Outputs, inferOutput{Name: name, Datatype: "BYTES", Shape: []int64{int64(len(texts))}, Data: texts})
		case "output_ids":
			var ids []int
			for _, res := range results {
				ids = append(ids, res.ids...)
			}
			shape := []int64{int64(len(results)), int64(len(results[0].ids))}
			resp.Outputs = append(resp.Outputs, inferOutput{Name: name, Datatype: "INT32", Shape: shape, Data: ids})
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

// inferJob reads an infer request's inputs into a job, and the outputs to
// return.
func (s *server) inferJob(m *Model, req *inferRequest) (job, []string, *httpError) {
	var (
		j         job
		texts     *inferInput
		ids       *inferInput
		maxTokens *int
	)
	for i := range req.Inputs {
		in := &req.Inputs[i]
		var dst **inferInput
		switch in.Name {
		case "text_input":
			dst = &texts
		case "input_ids":
			dst = &ids
		case "max_tokens":
			n, herr := intData(in, 1, math.MaxInt32)
			if herr != nil {
				return j, nil, herr
			}
			if len(n) != 1 {
				return j, nil, errBadRequest("", "input max_tokens: want one element, got %d", len(n))
			}
			v := int(n[0])
			maxTokens = &v
			continue
		default:
			return j, nil, errBadRequest("", "unsupported input %q; this model takes text_input (BYTES), input_ids (INT32 or INT64) and max_tokens (INT32 or INT64)", in.Name)
		}
		if *dst != nil {
			return j, nil, errBadRequest("", "input %q given twice", in.Name)
		}
		*dst = in
	}
	if maxTokens == nil {
		if raw, ok := req.Parameters["max_tokens"]; ok {
			var v int
			if err := json.Unmarshal(raw, &v); err != nil {
				return j, nil, errBadRequest("", "parameters.max_tokens must be an integer")
			}
			maxTokens = &v
		}
	}
	var herr *httpError
	if j.maxTokens, herr = s.maxTokens(maxTokens, "max_tokens"); herr != nil {
		return j, nil, herr
	}

	var outputs []string
	switch {
	case (texts == nil) == (ids == nil):
		return j, nil, errBadRequest("", "give exactly one of the inputs text_input and input_ids")
	case texts != nil:
		strs, herr := bytesData(texts)
		if herr != nil {
			return j, nil, herr
		}
		for _, t := range strs {
			j.prompts = append(j.prompts, m.Encode(t))
		}
		outputs = []string{"text_output"}
	default:
		if len(ids.Shape) != 1 && len(ids.Shape) != 2 {
			return j, nil, errBadRequest("", "input input_ids: shape must be [N] or [B, N], got %v", ids.Shape)
		}
		flat, herr := intData(ids, 0, math.MaxInt32)
		if herr != nil {
			return j, nil, herr
		}
		rows, n := int64(1), ids.Shape[len(ids.Shape)-1]
		if len(ids.Shape) == 2 {
			rows = ids.Shape[0]
		}
		if n == 0 || rows > maxBatch {
			return j, nil, errBadRequest("", "input input_ids: shape %v must hold 1 to %d prompts of at least one id", ids.Shape, maxBatch)
		}
		for row := range rows {
			p := make([]int, n)
			for k := range p {
				p[k] = int(flat[row*n+int64(k)])
			}
			prompt, err := m.EncodeIDs(p)
			if err != nil {
				return j, nil, errBadRequest("", "input input_ids: %v", err)
			}
			j.prompts = append(j.prompts, prompt)
		}
		outputs = []string{"output_ids", "text_output"}
	}
	if len(j.prompts) == 0 || len(j.prompts) > maxBatch {
		return j, nil, errBadRequest("", "1 to %d prompts per request, got %d", maxBatch, len(j.prompts))
	}
	if herr := fitContext(&j, maxTokens != nil, "max_tokens"); herr != nil {
		return j, nil, herr
	}

	if len(req.Outputs) > 0 {
		outputs = outputs[:0]
		for _, o := range req.Outputs {
			if o.Name != "text_output" && o.Name != "output_ids" {
				return j, nil, errBadRequest("", "unsupported output %q; this model gives text_output and output_ids", o.Name)
			}
			outputs = append(outputs, o.Name)
		}
	}
	for _, o := range outputs {
		j.keepIDs = j.keepIDs || o == "output_ids"
	}
	return j, outputs, nil
}

// elements flattens in's data, which may be nested as its shape, and checks
// its length against the shape.
func elements(in *inferInput) ([]any, *httpError) {
	count := int64(1)
	for _, d := range in.Shape {
		if d < 0 || d > 1<<24 || count*max(d, 1) > 1<<24 {
			return nil, errBadRequest("", "input %s: bad shape %v", in.Name, in.Shape)
		}
		count *= d
	}
	dec := json.NewDecoder(bytes.NewReader(in.Data))
	dec.UseNumber()
	var data any
	if err := dec.Decode(&data); err != nil {
		return nil, errBadRequest("", "input %s: data: %v", in.Name, err)
	}
	var flat []any
	var walk func(v any)
	walk = func(v any) {
		if a, ok := v.([]any); ok {
			for _, e := range a {
				walk(e)
			}
			return
		}
		flat = append(flat, v)
	}
	walk(data)
	if int64(len(flat)) != count {
		return nil, errBadRequest("", "input %s: shape %v holds %d elements, data has %d", in.Name, in.Shape, count, len(flat))
	}
	return flat, nil
}

func bytesData(in *inferInput) ([]string, *httpError) {
	if in.Datatype != "BYTES" {
		return nil, errBadRequest("", "input %s: datatype must be BYTES, got %q", in.Name, in.Datatype)
	}
	flat, herr := elements(in)
	if herr != nil {
		return nil, herr
	}
	out := make([]string, len(flat))
	for i, v := range flat {
		s, ok := v.(string)
		if !ok {
			return nil, errBadRequest("", "input %s: element %d is not a string", in.Name, i)
		}
		out[i] = s
	}
	return out, nil
}

func intData(in *inferInput, lo, hi int64) ([]int64, *httpError) {
	if in.Datatype != "INT32" && in.Datatype != "INT64" {
		return nil, errBadRequest("", "input %s: datatype must be INT32 or INT64, got %q", in.Name, in.Datatype)
	}
	flat, herr := elements(in)
	if herr != nil {
		return nil, herr
	}
	out := make([]int64, len(flat))
	for i, v := range flat {
		num, ok := v.(json.Number)
		var n int64
		var err error = errors.New("not a number")
		if ok {
			n, err = strconv.ParseInt(strings.TrimSpace(num.String()), 10, 64)
		}
		if err != nil || n < lo || n > hi {
			return nil, errBadRequest("", "input %s: element %d is not an integer in [%d, %d]", in.Name, i, lo, hi)
		}
		out[i] = n
	}
	return out, nil
}
