package modelserver

import (
	"encoding/json"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/infera-dev/infera/internal/testutil"
)

func TestServedNames(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"nothing: config.json's", Config{}, []string{"llm"}},
		{"K_SERVICE, then config.json's", Config{Service: "chat"}, []string{"chat", "llm"}},
		{"K_SERVICE the same as config.json's", Config{Service: "llm"}, []string{"llm"}},
		{"names, then K_SERVICE", Config{Names: []string{"a"}, Service: "chat"}, []string{"a", "chat"}},
		{"names holding K_SERVICE", Config{Names: []string{"a", "chat", "b"}, Service: "chat"}, []string{"a", "chat", "b"}},
		{"names, config.json's left out", Config{Names: []string{"a"}}, []string{"a"}},
		{"primary first, aliases in order", Config{Names: []string{"chat", "gpt-4o", "org/m"}}, []string{"chat", "gpt-4o", "org/m"}},
		{"repeats dropped", Config{Names: []string{"a", "b", "a"}}, []string{"a", "b"}},
	}
	for _, tt := range tests {
		if got := servedNames(tt.cfg, "llm"); !slices.Equal(got, tt.want) {
			t.Errorf("%s: servedNames = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestConfigNamesEmpty(t *testing.T) {
	_, err := Config{ModelDir: "x", Names: []string{"a", ""}}.withDefaults()
	if err == nil || !strings.Contains(err.Error(), "empty name") {
		t.Errorf("withDefaults: %v; want an error about the empty name", err)
	}
}

type modelList struct {
	Object string `json:"object"`
	Data   []struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		OwnedBy string `json:"owned_by"`
		Created int64  `json:"created"`
	} `json:"data"`
}

func (l modelList) ids() []string {
	var ids []string
	for _, m := range l.Data {
		ids = append(ids, m.ID)
	}
	return ids
}

// TestNames: every served name is listed, accepted in requests, echoed in
// responses and served under /v2/models; other names are not.
func TestNames(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		names   []string // served, primary first
		unknown string   // a name not served
	}{
		{"config.json's", Config{}, []string{DefaultName}, "chat"},
		{"K_SERVICE", Config{Service: "chat"}, []string{"chat", DefaultName}, "llm"},
		{"names and K_SERVICE", Config{Names: []string{"chat", "gpt-4o", "org/tiny"}, Service: "svc"}, []string{"chat", "gpt-4o", "org/tiny", "svc"}, DefaultName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, tt.cfg)
			code, b := ts.do(t, "GET", "/v1/models", nil, "")
			list := decode[modelList](t, b)
			if code != 200 || list.Object != "list" || !slices.Equal(list.ids(), tt.names) {
				t.Fatalf("GET /v1/models: %d %s; want ids %q", code, b, tt.names)
			}
			for _, m := range list.Data {
				if m.Object != "model" || m.OwnedBy != "infera" || m.Created == 0 {
					t.Errorf("model %+v", m)
				}
			}
			for _, name := range tt.names {
				if code, b := ts.do(t, "GET", "/v1/models/"+name, nil, ""); code != 200 || decode[map[string]any](t, b)["id"] != name {
					t.Errorf("GET /v1/models/%s: %d %s", name, code, b)
				}
				code, b := ts.do(t, "POST", "/v1/chat/completions", with(chat("hi", 1), "model", name), "")
				if code != 200 || decode[testCompletion](t, b).Model != name {
					t.Errorf("chat completion for %q: %d %s", name, code, b)
				}
				code, b = ts.do(t, "POST", "/v1/completions", with(completion("hi", 1), "model", name), "")
				if code != 200 || decode[testCompletion](t, b).Model != name {
					t.Errorf("completion for %q: %d %s", name, code, b)
				}
				v2 := "/v2/models/" + url.PathEscape(name) // org/tiny is org%2Ftiny: one path segment
				if code, b := ts.do(t, "GET", v2, nil, ""); code != 200 || decode[map[string]any](t, b)["name"] != name {
					t.Errorf("GET %s: %d %s", v2, code, b)
				}
				if code, b := ts.do(t, "GET", v2+"/versions/1/ready", nil, ""); code != 200 || !strings.Contains(string(b), `"ready":true`) {
					t.Errorf("GET %s/versions/1/ready: %d %s", v2, code, b)
				}
				infer := map[string]any{"inputs": []any{map[string]any{"name": "text_input", "shape": []int{1}, "datatype": "BYTES", "data": []string{"hi"}}}}
				if code, b := ts.do(t, "POST", v2+"/infer", infer, ""); code != 200 || decode[kserveResponse](t, b).ModelName != name {
					t.Errorf("POST %s/infer: %d %s", v2, code, b)
				}
			}
			// No model named: the primary answers.
			code, b = ts.do(t, "POST", "/v1/completions", map[string]any{"prompt": "hi", "max_tokens": 1}, "")
			if code != 200 || decode[testCompletion](t, b).Model != tt.names[0] {
				t.Errorf("completion naming no model: %d %s; want model %q", code, b, tt.names[0])
			}
			for _, path := range []string{"/v1/models/" + tt.unknown, "/v2/models/" + tt.unknown} {
				if code, b := ts.do(t, "GET", path, nil, ""); code != 404 {
					t.Errorf("GET %s: %d %s; want 404", path, code, b)
				}
			}
			if code, b := ts.do(t, "POST", "/v1/chat/completions", with(chat("hi", 1), "model", tt.unknown), ""); code != 404 || !strings.Contains(string(b), "model_not_found") {
				t.Errorf("chat completion for %q: %d %s; want 404 model_not_found", tt.unknown, code, b)
			}
		})
	}
}

// TestLoadReported: the load's size, time, rate and method are in the log
// and in the v2 model metadata's parameters.
func TestLoadReported(t *testing.T) {
	tests := []struct {
		name       string
		cfg        Config
		wantMethod string
		wantPar    float64
	}{
		{"defaults", Config{}, LoadRead, DefaultLoadParallelism},
		{"3 readers", Config{LoadParallelism: 3}, LoadRead, 3},
		{"mmap, verified", Config{Mmap: true, LoadParallelism: 2, Verify: true}, LoadMmap, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs testutil.SyncBuffer
			tt.cfg.Logger = slog.New(slog.NewJSONHandler(&logs, nil))
			tt.cfg.Names = []string{"chat", "gpt-4o"}
			ts := startServer(t, tt.cfg)

			code, b := ts.do(t, "GET", "/v2/models/gpt-4o", nil, "")
			md := decode[struct {
				Name       string         `json:"name"`
				Platform   string         `json:"platform"`
				Inputs     []any          `json:"inputs"`
				Parameters map[string]any `json:"parameters"`
			}](t, b)
			p := md.Parameters
			if code != 200 || md.Name != "gpt-4o" || md.Platform == "" || len(md.Inputs) == 0 {
				t.Fatalf("GET /v2/models/gpt-4o: %d %s", code, b)
			}
			size := float64(1 << 20) // within 1% of newModelDir's size
			if bytes, _ := p["load_bytes"].(float64); bytes < 0.99*size || bytes > 1.01*size ||
				p["load_method"] != tt.wantMethod || p["load_parallelism"] != tt.wantPar ||
				!(p["load_seconds"].(float64) > 0) || !(p["load_mb_per_s"].(float64) > 0) ||
				p["verified"] != tt.cfg.Verify || p["served_names"] != "chat,gpt-4o" {
				t.Errorf("parameters %v", p)
			}
			for k, v := range p { // the v2 protocol's parameters are flat
				switch v.(type) {
				case string, float64, bool:
				default:
					t.Errorf("parameter %s is a %T", k, v)
				}
			}

			var loaded map[string]any
			for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				var rec map[string]any
				if err := json.Unmarshal([]byte(line), &rec); err != nil {
					t.Fatalf("log line %q: %v", line, err)
				}
				if rec["msg"] == "model loaded" {
					loaded = rec
				}
			}
			if loaded == nil || loaded["bytes"] != p["load_bytes"] || loaded["load_method"] != tt.wantMethod ||
				loaded["load_parallelism"] != tt.wantPar || !(loaded["seconds"].(float64) > 0) || !(loaded["mb_per_s"].(float64) > 0) ||
				loaded["model"] != "chat" || len(loaded["aliases"].([]any)) != 1 {
				t.Errorf("model loaded log record %v", loaded)
			}
		})
	}
}
