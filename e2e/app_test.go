package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// appEnv makes this test binary run as a replica app instead of the tests.
const appEnv = "INFERA_E2E_APP"

// runApp is a small HTTP app that follows Knative's runtime contract (listens on $PORT, knows
// K_REVISION) with behaviours a test selects through its environment:
//
//	APP_START_DELAY  wait this long before listening (a slow model load)
//	APP_CRASH        exit 1 at once (a crash loop)
//	APP_LIVE_FILE    /live answers 500 while this file exists (a failing liveness probe)
func runApp() {
	if d, err := time.ParseDuration(os.Getenv("APP_START_DELAY")); err == nil {
		time.Sleep(d) // the app being slow to start: the behaviour under test
	}
	if os.Getenv("APP_CRASH") != "" {
		fmt.Fprintln(os.Stderr, "app: crashing on purpose")
		os.Exit(1)
	}
	rev := os.Getenv("K_REVISION")
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s\n", rev)
	})
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, "%s\n", rev)
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		gap, _ := time.ParseDuration(r.URL.Query().Get("gap"))
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < n; i++ {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-time.After(gap):
			case <-r.Context().Done():
				return
			}
		}
	})
	mux.HandleFunc("/live", func(w http.ResponseWriter, r *http.Request) {
		if f := os.Getenv("APP_LIVE_FILE"); f != "" {
			if _, err := os.Stat(f); err == nil {
				http.Error(w, "not live", http.StatusInternalServerError)
				return
			}
		}
		fmt.Fprintln(w, "live")
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, os.Getenv(r.URL.Query().Get("k")))
	})
	mux.HandleFunc("/file", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(r.URL.Query().Get("p"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		w.Write(b)
	})
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"revision":%q}`+"\n", rev)
	})
	srv := &http.Server{Addr: "127.0.0.1:" + os.Getenv("PORT"), Handler: mux}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	go func() {
		<-sigs
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "app:", err)
		os.Exit(1)
	}
}

// appService is a Service manifest running the app. annotations are template annotations;
// extra is appended to the container (indented 10 spaces); specExtra to the revision spec.
func appService(name string, annotations map[string]string, env map[string]string, specExtra, containerExtra string) string {
	var c strings.Builder
	fmt.Fprintf(&c, "command: [%q]\nenv:\n  - name: %s\n    value: \"1\"\n", appBin, appEnv)
	for k, v := range env {
		fmt.Fprintf(&c, "  - name: %s\n    value: %q\n", k, v)
	}
	return imageService(name, "e2e-app", annotations, specExtra, c.String()+containerExtra)
}

func indent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(pad + line + "\n")
	}
	return b.String()
}
