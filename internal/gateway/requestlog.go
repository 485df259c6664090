package gateway

import (
	"bytes"
	"fmt"
	"io"
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

// NewRequestLogger parses a logging.request-log-template; a line that does not end in a newline
// gets one, as in Knative.
func NewRequestLogger(tmpl string, w io.Writer, opts ...RequestLogOption) (*RequestLogger, error) {
	if !strings.HasSuffix(tmpl, "\n") {
		tmpl += "\n"
	}
	t, err := template.New("request-log").Parse(tmpl)
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
		buf.Reset()
		fmt.Fprintf(buf, "Invalid request log template: method: %v, response code: %v, latency: %v, url: %v\n",
			in.Request.Method, in.Response.Code, in.Response.Latency, in.Request.URL)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.Write(buf.Bytes()) //nolint:errcheck // a log line that cannot be written is dropped
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
