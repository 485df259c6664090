package adminapi

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// TokenFile is the admin token's file in the state directory: made at the first start of an
// up whose admin address is not loopback, mode 0600.
const TokenFile = "admin-token"

// TokenEnv names the environment variable the CLI takes the token from first.
const TokenEnv = "INFERA_TOKEN"

// ErrUnauthorized is what a client gets without the right token (401).
var ErrUnauthorized = errors.New("the admin API needs its bearer token")

// Guard answers 401 to every request but GET /healthz that lacks "Authorization: Bearer
// <token>"; an empty token guards nothing. The comparison takes the same time whatever the
// token sent.
func Guard(h http.Handler, token string) http.Handler {
	if token == "" {
		return h
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/healthz" {
			h.ServeHTTP(w, r)
			return
		}
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="infera"`)
			writeJSON(w, http.StatusUnauthorized, APIError{Error: ErrUnauthorized.Error() + fmt.Sprintf(": set %s, or run the CLI where it can read the state directory's %s", TokenEnv, TokenFile)})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// IsLoopback reports whether a listener's address only takes connections from this machine.
func IsLoopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP != nil && tcp.IP.IsLoopback()
}

// LoadOrCreateToken reads the token from file, or, when it does not exist and create is
// true, writes a new random one there (mode 0600) and returns it.
func LoadOrCreateToken(file string, create bool) (string, error) {
	b, err := os.ReadFile(file)
	if err == nil {
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("admin token file %s is empty", file)
		}
		return tok, nil
	}
	if !errors.Is(err, os.ErrNotExist) || !create {
		return "", fmt.Errorf("admin token: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(raw[:])
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return "", err
	}
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	if _, err := f.WriteString(tok + "\n"); err != nil {
		f.Close()
		return "", err
	}
	return tok, f.Close()
}

// ClientToken is the token the CLI sends: $INFERA_TOKEN, else the state directory's
// TokenFile when it can read it, else none.
func ClientToken(stateDir string) string {
	if t := strings.TrimSpace(os.Getenv(TokenEnv)); t != "" {
		return t
	}
	if stateDir == "" {
		return ""
	}
	b, err := os.ReadFile(filepath.Join(stateDir, TokenFile))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
