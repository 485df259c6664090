package main

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRoutes: the handlers the container tests rely on, in process (TestHTTPApp in testutil
// runs the built binary with its flags and SIGTERM).
func TestRoutes(t *testing.T) {
	t.Setenv("K_REVISION", "r-00001")
	t.Setenv("APP_VERSION", "7")
	t.Setenv("X", "y")
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, []byte("content"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := &app{readyAt: time.Now()}
	h := a.routes()
	tests := []struct {
		path string
		code int
		body string
	}{
		{"/", 200, "hello from r-00001 version=7\n"},
		{"/env?name=X", 200, "y"},
		{"/file?path=" + file, 200, "content"},
		{"/file?path=" + filepath.Join(dir, "none"), 404, ""},
		{"/healthz", 200, "ok"},
		{"/health", 200, "ok"},
	}
	for _, tt := range tests {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", tt.path, nil))
		if w.Code != tt.code || (tt.body != "" && w.Body.String() != tt.body) {
			t.Errorf("GET %s = %d %q, want %d %q", tt.path, w.Code, w.Body, tt.code, tt.body)
		}
	}
	a.terminating.Store(true)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/healthz", nil))
	if w.Code != 503 {
		t.Errorf("healthz after SIGTERM: %d, want 503", w.Code)
	}
	notYet := &app{readyAt: time.Now().Add(time.Hour)}
	w = httptest.NewRecorder()
	notYet.routes().ServeHTTP(w, httptest.NewRequest("GET", "/healthz", nil))
	if w.Code != 503 {
		t.Errorf("healthz before --ready-after: %d, want 503", w.Code)
	}
}
