package gateway

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"text/template"
)

// RequestLogResponse is .Response in a request log template (Knative's fields).
type RequestLogResponse struct {
	Code    int
	Size    int
	Latency float64 // seconds
}

// RequestLogRevision is .Revision in a request log template (Knative's fields); PodName is the
// replica's name and PodIP its address.
type RequestLogRevision struct {
	Name          string
	Namespace     string
	Service       string
	Configuration string
	PodName       string
	PodIP         string
}

// RequestLogInput is what a request log template is executed on, as in Knative's
// logging.request-log-template.
type RequestLogInput struct {
	Request  *http.Request
	Response *RequestLogResponse
	Revision *RequestLogRevision
	TraceID  string // from traceparent, else X-B3-TraceId
}

// RequestLogger writes one line per request from a Go text/template: Knative queue-proxy's
// request log handler (knative.dev/serving/pkg/http.RequestLogHandler).
type RequestLogger struct {
	t      *template.Template
	probes bool // logging.enable-probe-request-log
	errLog *slog.Logger
	failed sync.Once // the template's first run-time failure is logged, once
	mu     sync.Mutex
	w      io.Writer
}

// RequestLogOption is a setting of a RequestLogger besides its template.
type RequestLogOption func(*RequestLogger)

// LogProbeRequests is config-observability's logging.enable-probe-request-log. Probe requests
// (kubelet's: K-Kubelet-Probe or a kube-probe/ User-Agent; Knative's: K-Network-Probe) get a
// line only when it is true; the default is false, as in Knative. Other requests always get one.
func LogProbeRequests(enabled bool) RequestLogOption {
	return func(l *RequestLogger) { l.probes = enabled }
}

// LogTemplateErrors sends the template's first run-time failure to log (once: each request
// still gets Knative's short fallback line, but the error is not repeated per request).
func LogTemplateErrors(log *slog.Logger) RequestLogOption {
	return func(l *RequestLogger) { l.errLog = log }
}

// NewRequestLogger parses a logging.request-log-template; a line that does not end in a newline
// gets one, as in Knative.
func NewRequestLogger(tmpl string, w io.Writer, opts ...RequestLogOption) (*RequestLogger, error) {
	if !strings.HasSuffix(tmpl, "\n") {
		tmpl += "\n"
	}
	t, err := template.New("request-log").Funcs(template.FuncMap{"js": jsonSafeJS}).Parse(tmpl)
	if err != nil {
		return nil, fmt.Errorf("gateway: request log template: %w", err)
	}
	l := &RequestLogger{t: t, w: w}
	for _, o := range opts {
		o(l)
	}
	return l, nil
}

var logBufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Log writes the line for one request; for a probe request, only with LogProbeRequests(true).
// A template that fails on this input writes a short line saying so instead, as Knative does.
func (l *RequestLogger) Log(in *RequestLogInput) {
	if !l.probes && isProbe(in.Request) {
		return
	}
	buf := logBufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer logBufPool.Put(buf)
	if err := l.t.Execute(buf, in); err != nil {
		if l.errLog != nil {
			l.failed.Do(func() {
				l.errLog.Error("request log template fails on a request; each request gets the short fallback line, and this error is not repeated", "error", err)
			})
		}
		buf.Reset()
		fmt.Fprintf(buf, "Invalid request log template: method: %v, response code: %v, latency: %v, url: %v\n",
			in.Request.Method, in.Response.Code, in.Response.Latency, in.Request.URL)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.Write(buf.Bytes()) //nolint:errcheck // a log line that cannot be written is dropped
}

// jsonSafeJS is text/template's js, escaping a single quote as \u0027 rather than \': the same
// string in JavaScript, and valid inside a JSON string too, so that a user agent, URL or
// referer with quotes, newlines or control characters cannot break a JSON request log line
// (Knative's default template and the article's are JSON and escape those fields with js).
func jsonSafeJS(args ...any) string {
	var s string
	if len(args) == 1 {
		if v, ok := args[0].(string); ok {
			s = v
		} else {
			s = fmt.Sprint(args[0])
		}
	} else {
		s = fmt.Sprint(args...)
	}
	return strings.ReplaceAll(template.JSEscapeString(s), `\'`, `\u0027`)
}

// traceID is Knative's ExtractTraceID: the trace-id field of traceparent, else X-B3-TraceId.
func traceID(h http.Header) string {
	if tp := h.Get("Traceparent"); tp != "" {
		if parts := strings.SplitN(tp, "-", 3); len(parts) >= 2 {
			return parts[1]
		}
	}
	return h.Get("X-B3-Traceid")
}

func podIP(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}
