package adminapi

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGuard(t *testing.T) {
	inner := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	tests := []struct {
		name, token, method, path, auth string
		want                            int
	}{
		{"no token guards nothing", "", "POST", "/api/v1/apply", "", http.StatusTeapot},
		{"the right token", "t0k", "POST", "/api/v1/apply", "Bearer t0k", http.StatusTeapot},
		{"none", "t0k", "POST", "/api/v1/apply", "", http.StatusUnauthorized},
		{"a wrong one", "t0k", "GET", "/api/v1/services", "Bearer t0kX", http.StatusUnauthorized},
		{"not bearer", "t0k", "GET", "/metrics", "Basic t0k", http.StatusUnauthorized},
		{"healthz is open", "t0k", "GET", "/healthz", "", http.StatusTeapot},
		{"healthz is open for GET only", "t0k", "POST", "/healthz", "", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, tt.path, nil)
			if tt.auth != "" {
				r.Header.Set("Authorization", tt.auth)
			}
			w := httptest.NewRecorder()
			Guard(inner, tt.token).ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Fatalf("%d, want %d", w.Code, tt.want)
			}
			if w.Code == http.StatusUnauthorized && (w.Header().Get("WWW-Authenticate") == "" || !strings.Contains(w.Body.String(), TokenEnv)) {
				t.Errorf("401 without a challenge or a hint: %v %s", w.Header(), w.Body)
			}
		})
	}
}

func TestTokenFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "state", TokenFile)
	if _, err := LoadOrCreateToken(file, false); err == nil {
		t.Fatal("a missing file without create: no error")
	}
	tok, err := LoadOrCreateToken(file, true)
	if err != nil || len(tok) != 64 {
		t.Fatalf("token %q %v", tok, err)
	}
	if info, _ := os.Stat(file); info.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", info.Mode().Perm())
	}
	again, err := LoadOrCreateToken(file, true)
	if err != nil || again != tok {
		t.Errorf("second start: %q %v, want the same token", again, err)
	}
	t.Setenv(TokenEnv, "")
	if got := ClientToken(filepath.Dir(file)); got != tok {
		t.Errorf("ClientToken from the state dir = %q", got)
	}
	t.Setenv(TokenEnv, "from-env")
	if got := ClientToken(filepath.Dir(file)); got != "from-env" {
		t.Errorf("ClientToken with %s = %q", TokenEnv, got)
	}
	os.WriteFile(filepath.Join(dir, "empty"), []byte("\n"), 0o600)
	if _, err := LoadOrCreateToken(filepath.Join(dir, "empty"), false); err == nil {
		t.Error("an empty token file: no error")
	}
}

func TestIsLoopback(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:1": true, "[::1]:1": true, "0.0.0.0:1": false, "[::]:1": false, "10.1.2.3:1": false} {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if IsLoopback(a) != want {
			t.Errorf("IsLoopback(%s) = %v", addr, !want)
		}
	}
}
