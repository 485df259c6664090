package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const zeroInitialScale = `apiVersion: v1
kind: ConfigMap
metadata:
  name: config-autoscaler
  namespace: knative-serving
data:
  allow-zero-initial-scale: "true"
  scale-to-zero-grace-period: "2s"
---
`

func TestRoutingByHostModelAndUnknown(t *testing.T) {
	u := startUp(t, appService("hello", map[string]string{"infera.dev/models": "hello-alias"}, nil, "", ""))
	u.waitReady("hello")

	code, body := u.get(t, "hello.default.localhost", "/")
	if code != 200 || strings.TrimSpace(body) != "hello-00001" {
		t.Fatalf("GET by host = %d %q, want 200 hello-00001", code, body)
	}
	for _, model := range []string{"hello", "hello-alias"} {
		resp, err := u.do(http.MethodPost, u.gateway, "/v1/chat/completions",
			strings.NewReader(fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hi"}]}`, model)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"revision":"hello-00001"`) {
			t.Errorf("POST model %q = %d %s", model, resp.StatusCode, b)
		}
	}
	code, body = u.get(t, "nope.default.localhost", "/")
	if code != http.StatusNotFound || !strings.Contains(body, `"error"`) {
		t.Errorf("unknown host = %d %s, want 404 JSON", code, body)
	}
}

func TestTrafficSplitAndTags(t *testing.T) {
	u := startUp(t, appService("split", nil, map[string]string{"V": "1"}, "", ""))
	u.waitReady("split")
	v2 := appService("split", nil, map[string]string{"V": "2"}, "", "") + `  traffic:
    - revisionName: split-00001
      percent: 70
      tag: old
    - latestRevision: true
      percent: 30
      tag: new
`
	u.apply(t, v2)
	eventually(t, 60*time.Second, "traffic on split-00002", func() (bool, string) {
		s := u.waitReady("split")
		for _, tr := range s.Traffic {
			if tr.Revision == "split-00002" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", s.Traffic)
	})
	counts := map[string]int{}
	for i := 0; i < 1000; i++ {
		code, body := u.get(t, "split.default.localhost", "/")
		if code != 200 {
			t.Fatalf("request %d: %d %s", i, code, body)
		}
		counts[strings.TrimSpace(body)]++
	}
	if old := counts["split-00001"]; old < 650 || old > 750 {
		t.Errorf("70/30 split over 1000 requests gave %v", counts)
	}
	for tag, want := range map[string]string{"old": "split-00001", "new": "split-00002"} {
		if code, body := u.get(t, tag+"-split.default.localhost", "/"); code != 200 || strings.TrimSpace(body) != want {
			t.Errorf("tag %s: %d %q, want %s", tag, code, body, want)
		}
	}
}

func TestRequestHeldWhileReplicaStarts(t *testing.T) {
	// A replica that takes a second to listen: the first request waits for it, then is served.
	u := startUp(t, appService("slow", nil, map[string]string{"APP_START_DELAY": "1s"}, "", ""))
	code, body := u.get(t, "slow.default.localhost", "/")
	if code != 200 || strings.TrimSpace(body) != "slow-00001" {
		t.Fatalf("held request = %d %q", code, body)
	}
}

func TestScaleFromZeroOnFirstRequest(t *testing.T) {
	u := startUp(t, zeroInitialScale+appService("cold", map[string]string{"autoscaling.knative.dev/initial-scale": "0"}, nil, "", ""))
	eventually(t, 30*time.Second, "revision created at zero", func() (bool, string) {
		for _, r := range u.revisions(t) {
			if r.Name == "cold-00001" && r.Decision != nil {
				return r.Decision.Desired == 0 && r.RunningReplicas == 0, fmt.Sprintf("%+v", r)
			}
		}
		return false, "no revision"
	})
	code, body := u.get(t, "cold.default.localhost", "/")
	if code != 200 || strings.TrimSpace(body) != "cold-00001" {
		t.Fatalf("first request at zero = %d %q", code, body)
	}
}

func TestBreakerOverflowAnd503(t *testing.T) {
	// containerConcurrency 1 and target-burst-capacity 0: with a ready replica the activator is
	// out of the path, so the queue-proxy breaker applies: 1 in flight + 10 queued, then 503.
	u := startUp(t, appService("narrow", map[string]string{
		"autoscaling.knative.dev/target-burst-capacity": "0",
		"autoscaling.knative.dev/min-scale":             "1",
		"autoscaling.knative.dev/max-scale":             "1",
	}, nil, "containerConcurrency: 1\n", ""))
	u.waitReady("narrow")
	eventually(t, 30*time.Second, "activator out of path", func() (bool, string) {
		for _, r := range u.revisions(t) {
			if r.Name == "narrow-00001" && r.Decision != nil {
				return !r.Decision.ActivatorInPath, fmt.Sprintf("%+v", *r.Decision)
			}
		}
		return false, "no decision"
	})
	const n = 20
	var wg sync.WaitGroup
	var ok, full, other atomic.Int32
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := u.do(http.MethodGet, "narrow.default.localhost", "/sleep?d=1500ms", nil)
			if err != nil {
				other.Add(1)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case resp.StatusCode == 200:
				ok.Add(1)
			case resp.StatusCode == 503 && strings.Contains(string(b), "pending request queue full"):
				full.Add(1)
			default:
				other.Add(1)
				t.Logf("unexpected %d %s", resp.StatusCode, b)
			}
		}()
	}
	wg.Wait()
	if full.Load() == 0 || ok.Load() == 0 || other.Load() != 0 || ok.Load() > 11 {
		t.Errorf("ok %d, queue full %d, other %d: want at most 11 ok and the rest 503", ok.Load(), full.Load(), other.Load())
	}
}

func TestTimeoutSeconds504(t *testing.T) {
	u := startUp(t, appService("late", nil, nil, "timeoutSeconds: 1\n", ""))
	u.waitReady("late")
	start := time.Now()
	code, body := u.get(t, "late.default.localhost", "/sleep?d=10s")
	if code != http.StatusGatewayTimeout || time.Since(start) > 8*time.Second {
		t.Errorf("= %d %q after %v, want 504 at about 1s", code, body, time.Since(start))
	}
}

func TestStreamFlushedPerEvent(t *testing.T) {
	u := startUp(t, appService("sse", nil, nil, "", ""))
	u.waitReady("sse")
	resp, err := u.do(http.MethodGet, "sse.default.localhost", "/stream?n=3&gap=30s", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// The app waits 30 s between events: the first event can only arrive now if it was flushed.
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: 0\n" {
		t.Fatalf("first event = %q, %v", line, err)
	}
}

func TestLivenessFailureRestarts(t *testing.T) {
	liveFile := t.TempDir() + "/dead"
	u := startUp(t, appService("frail", nil, map[string]string{"APP_LIVE_FILE": liveFile}, "", `livenessProbe:
  httpGet:
    path: /live
  initialDelaySeconds: 1
  periodSeconds: 1
  failureThreshold: 2
`))
	u.waitReady("frail")
	if err := os.WriteFile(liveFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "replica restarted", func() (bool, string) {
		for _, r := range u.replicas(t) {
			if r.Restarts > 0 {
				os.Remove(liveFile)
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", u.replicas(t))
	})
}

func TestCrashLoopBackOff(t *testing.T) {
	u := startUp(t, appService("broken", nil, map[string]string{"APP_CRASH": "1"}, "", ""))
	eventually(t, 30*time.Second, "CrashLoopBackOff and revision failed", func() (bool, string) {
		var state string
		for _, r := range u.replicas(t) {
			state = r.State
		}
		for _, r := range u.revisions(t) {
			if r.Name == "broken-00001" {
				return state == "CrashLoopBackOff" && r.Ready == "False", fmt.Sprintf("replica %s, revision %+v", state, r)
			}
		}
		return false, "no revision"
	})
}

func TestRolloutUnderLoadHasNoErrors(t *testing.T) {
	u := startUp(t, appService("roll", nil, map[string]string{"V": "1"}, "", ""))
	u.waitReady("roll")
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var total, bad atomic.Int32
	seen := sync.Map{}
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				resp, err := u.do(http.MethodGet, "roll.default.localhost", "/sleep?d=20ms", nil)
				total.Add(1)
				if err != nil {
					bad.Add(1)
					t.Logf("error: %v", err)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					bad.Add(1)
					t.Logf("%d %s", resp.StatusCode, b)
					continue
				}
				seen.Store(strings.TrimSpace(string(b)), true)
			}
		}()
	}
	u.apply(t, appService("roll", nil, map[string]string{"V": "2"}, "", ""))
	eventually(t, 60*time.Second, "old revision drained and stopped", func() (bool, string) {
		_, v2 := seen.Load("roll-00002")
		for _, r := range u.replicas(t) {
			if strings.HasSuffix(r.Revision, "/roll-00001") {
				return false, fmt.Sprintf("old replica %+v", r)
			}
		}
		return v2, "no response from roll-00002 yet"
	})
	stop()
	wg.Wait()
	if bad.Load() != 0 || total.Load() == 0 {
		t.Errorf("%d of %d requests failed during the rollout", bad.Load(), total.Load())
	}
}

func TestSIGTERMAnswersEveryAcceptedRequest(t *testing.T) {
	u := startUp(t, appService("busy", nil, nil, "", ""))
	u.waitReady("busy")
	var wg sync.WaitGroup
	var answered, refused, broken atomic.Int32
	started := make(chan struct{}, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				if j == 1 {
					started <- struct{}{}
				}
				resp, err := u.do(http.MethodGet, "busy.default.localhost", "/sleep?d=300ms", nil)
				if err != nil {
					if errors.Is(err, syscall.ECONNREFUSED) {
						refused.Add(1)
						return
					}
					broken.Add(1)
					t.Logf("accepted request dropped: %v", err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					broken.Add(1)
					t.Logf("status %d during shutdown", resp.StatusCode)
					return
				}
				answered.Add(1)
			}
		}()
	}
	for i := 0; i < 8; i++ {
		<-started
	}
	err := u.stop(syscall.SIGTERM)
	wg.Wait()
	if err != nil {
		t.Errorf("infera up exited with %v after SIGTERM, want 0\n%s", err, u.out)
	}
	if broken.Load() != 0 || answered.Load() == 0 {
		t.Errorf("answered %d, refused after shutdown %d, dropped %d", answered.Load(), refused.Load(), broken.Load())
	}
}

func TestSIGKILLLeavesNoChild(t *testing.T) {
	u := startUp(t, appService("orphan", map[string]string{"autoscaling.knative.dev/min-scale": "2"}, nil, "", ""))
	var pids []int
	eventually(t, 60*time.Second, "two replicas running", func() (bool, string) {
		pids = pids[:0]
		for _, r := range u.replicas(t) {
			if r.PID > 0 && r.State == "Ready" {
				pids = append(pids, r.PID)
			}
		}
		return len(pids) == 2, fmt.Sprint(pids)
	})
	u.cmd.Process.Signal(syscall.SIGKILL) // infera only, not its process group
	<-u.done
	u.done <- nil
	eventually(t, 10*time.Second, "replicas gone", func() (bool, string) {
		for _, pid := range pids {
			if alive(pid) {
				return false, fmt.Sprintf("pid %d alive", pid)
			}
		}
		return true, ""
	})
}

// alive reports whether pid is a live process (a zombie awaiting its reaper counts as gone).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func TestSecondSignalForcesExit(t *testing.T) {
	u := startUp(t, appService("stuck", nil, nil, "timeoutSeconds: 600\n", ""))
	u.waitReady("stuck")
	held := make(chan error, 1)
	go func() {
		resp, err := u.do(http.MethodGet, "stuck.default.localhost", "/sleep?d=10m", nil)
		if err == nil {
			resp.Body.Close()
		}
		held <- err
	}()
	eventually(t, 10*time.Second, "request in flight", func() (bool, string) {
		for _, r := range u.replicas(t) {
			if r.InFlight > 0 {
				return true, ""
			}
		}
		return false, "nothing in flight"
	})
	u.cmd.Process.Signal(syscall.SIGTERM) // graceful: would wait for the 10 minute request
	eventually(t, 10*time.Second, "shutting down", func() (bool, string) {
		return strings.Contains(u.out.String(), "shutting down"), ""
	})
	err := u.stop(syscall.SIGTERM)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Errorf("after a second signal: %v, want exit status 130\n%s", err, u.out)
	}
	<-held
}
