// Command httpapp is the application the container tests run as a replica: a static, stdlib-only
// HTTP server whose handlers report what the replica sees (its environment, files, identity and
// arguments) and let a test make it misbehave (exit, sleep, fail to start, stay unready).
//
// It listens on 127.0.0.1:PORT, PORT coming from --port or else $PORT (default 8080):
//
//	/                 "hello from $K_REVISION version=$APP_VERSION"
//	/env?name=X       the value of $X
//	/file?path=P      the content of P (404 when it does not exist)
//	/write?path=P     writes "x" to P (500 with the error when it cannot)
//	/id               "uid=N gid=M"
//	/args             os.Args, one a line
//	/exit?code=N      answers, then exits with status N
//	/sleep?d=500ms    sleeps d, then answers "slept"
//	/healthz          "ok"; 503 before --ready-after has passed and after SIGTERM
//	/health           the same (the path of the article's probes example)
//
// On SIGTERM it reports not-ready, keeps serving for --drain-delay, then shuts the server down,
// letting requests in flight finish (at most 30 s), and exits 0. --probe-file=P makes it a probe
// command instead: it exits 0 when P exists and 1 otherwise.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	port := flag.String("port", "", "port to listen on (default $PORT, else 8080)")
	failStart := flag.Bool("fail-start", false, "exit 1 at once, for crash back-off tests")
	readyAfter := flag.Duration("ready-after", 0, "answer /healthz 503 until this long after start")
	drainDelay := flag.Duration("drain-delay", 0, "after SIGTERM, keep serving (unready) this long before shutting down")
	probeFile := flag.String("probe-file", "", "probe mode: exit 0 if this file exists, else 1")
	flag.Parse()

	if *probeFile != "" {
		if _, err := os.Stat(*probeFile); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	if *failStart {
		fmt.Println("httpapp failing on purpose")
		os.Exit(1)
	}
	if *port == "" {
		*port = os.Getenv("PORT")
	}
	if *port == "" {
		*port = "8080"
	}
	if err := run(*port, *readyAfter, *drainDelay); err != nil {
		fmt.Fprintln(os.Stderr, "httpapp:", err)
		os.Exit(1)
	}
}

func run(port string, readyAfter, drainDelay time.Duration) error {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		return err
	}
	a := &app{readyAt: time.Now().Add(readyAfter)}
	srv := &http.Server{Handler: a.routes(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Printf("httpapp listening on :%s\n", port)

	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	select {
	case err := <-served:
		return err
	case <-term:
	}
	fmt.Println("httpapp got SIGTERM")
	a.terminating.Store(true)
	time.Sleep(drainDelay) // routes converge on not-ready while we keep serving
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

type app struct {
	readyAt     time.Time
	terminating atomic.Bool
}

func (a *app) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s version=%s\n", os.Getenv("K_REVISION"), os.Getenv("APP_VERSION"))
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, os.Getenv(r.URL.Query().Get("name")))
	})
	mux.HandleFunc("/file", func(w http.ResponseWriter, r *http.Request) {
		data, err := os.ReadFile(r.URL.Query().Get("path"))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			http.Error(w, err.Error(), http.StatusNotFound)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			_, _ = w.Write(data)
		}
	})
	mux.HandleFunc("/write", func(w http.ResponseWriter, r *http.Request) {
		if err := os.WriteFile(r.URL.Query().Get("path"), []byte("x"), 0o644); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, "ok")
	})
	mux.HandleFunc("/id", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "uid=%d gid=%d", os.Getuid(), os.Getgid())
	})
	mux.HandleFunc("/args", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, strings.Join(os.Args, "\n"))
	})
	mux.HandleFunc("/exit", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.URL.Query().Get("code"))
		if err != nil {
			http.Error(w, "code: "+err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Connection", "close")
		fmt.Fprintf(w, "exiting %d\n", code)
		_ = http.NewResponseController(w).Flush() // the answer is on the socket before the process goes
		os.Exit(code)
	})
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil {
			http.Error(w, "d: "+err.Error(), http.StatusBadRequest)
			return
		}
		select {
		case <-time.After(d):
			fmt.Fprint(w, "slept")
		case <-r.Context().Done():
		}
	})
	health := func(w http.ResponseWriter, r *http.Request) {
		switch {
		case a.terminating.Load():
			http.Error(w, "terminating", http.StatusServiceUnavailable)
		case time.Now().Before(a.readyAt):
			http.Error(w, "not ready yet", http.StatusServiceUnavailable)
		default:
			fmt.Fprint(w, "ok")
		}
	}
	mux.HandleFunc("/healthz", health)
	mux.HandleFunc("/health", health) // the path of the article's probes example
	return mux
}
