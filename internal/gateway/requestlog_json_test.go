package gateway

import (
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestRequestLogJSONSafe: with the article's template (examples/observability), user-controlled
// values with quotes, newlines and control characters in the URL, user agent and referer
// still give one valid JSON line that carries them as sent.
func TestRequestLogJSONSafe(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", "observability", "config-observability.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(b, &cm); err != nil {
		t.Fatal(err)
	}
	tmpl := cm.Data["logging.request-log-template"]
	if tmpl == "" {
		t.Fatal("no template in the example")
	}
	nasty := []string{`a"b`, `it's`, "line\nbreak", "tab\tand\x01ctl\x1b", `back\slash`, `</script><x>`, "unicode \u2028 é"}
	for _, v := range nasty {
		var out strings.Builder
		l, err := NewRequestLogger(tmpl, &out)
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest("GET", "http://x.default.localhost/p?q=1", nil)
		req.RequestURI = "/p?q=" + v
		req.Header.Set("User-Agent", v)
		req.Header.Set("Referer", v)
		l.Log(&RequestLogInput{Request: req, Response: &RequestLogResponse{Code: 200, Size: 3, Latency: 0.01}, Revision: &RequestLogRevision{Name: "x-00001"}})
		line := out.String()
		if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
			t.Errorf("%q: not one line: %q", v, line)
			continue
		}
		var got struct {
			HTTPRequest struct {
				RequestURL string `json:"requestUrl"`
				UserAgent  string `json:"userAgent"`
				Referer    string `json:"referer"`
			} `json:"httpRequest"`
		}
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Errorf("%q: invalid JSON: %v\n%s", v, err, line)
			continue
		}
		if got.HTTPRequest.UserAgent != v || got.HTTPRequest.Referer != v || got.HTTPRequest.RequestURL != "/p?q="+v {
			t.Errorf("%q: round trip gave %+v", v, got.HTTPRequest)
		}
	}
}

// TestRequestLogTemplateErrorOnce: a template that fails at run time logs its error once,
// and every request still gets Knative's fallback line.
func TestRequestLogTemplateErrorOnce(t *testing.T) {
	var out, errs strings.Builder
	l, err := NewRequestLogger(`{{index .Request.Header "X" 5}}`, &out, LogTemplateErrors(slog.New(slog.NewTextHandler(&errs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		req := httptest.NewRequest("GET", "http://x/p", nil)
		l.Log(&RequestLogInput{Request: req, Response: &RequestLogResponse{Code: 200}, Revision: &RequestLogRevision{}})
	}
	if n := strings.Count(out.String(), "Invalid request log template"); n != 3 {
		t.Errorf("%d fallback lines, want 3:\n%s", n, out.String())
	}
	if n := strings.Count(errs.String(), "request log template fails"); n != 1 {
		t.Errorf("%d errors logged, want 1:\n%s", n, errs.String())
	}
}
