package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// gpuService is appService with aliyun.com/gpu-mem limits.
func gpuService(name string, gib int, annotations map[string]string) string {
	return appService(name, annotations, nil, "", fmt.Sprintf("resources:\n  limits:\n    aliyun.com/gpu-mem: %q\n", fmt.Sprint(gib)))
}

func (u *up) handoffs(t *testing.T) float64 {
	t.Helper()
	mf := u.scrape(t)["infera_gpu_handoffs_total"]
	if mf == nil || len(mf.Metric) != 1 {
		t.Fatalf("no infera_gpu_handoffs_total")
	}
	return mf.Metric[0].GetCounter().GetValue()
}

// TestSharedGPUsDeclaredInventory runs the article's shared-GPU Service and three of 30 GiB on a
// declared inventory (--gpus 80Gi,80Gi: no real GPU here): they land 2 + 1 with ACK's gpushare
// env; a fourth of 60 GiB is Pending, saying which GPU has how much free, until an idle one
// scales to zero, and is then placed and serves.
func TestSharedGPUsDeclaredInventory(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "examples", "shared-gpu", "service.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	article := strings.Replace(string(b), "      containers:\n        - image: registry-vpc.cn-hangzhou.aliyuncs.com/demo-test/test:helloworld-go\n",
		fmt.Sprintf("      containers:\n        - image: registry-vpc.cn-hangzhou.aliyuncs.com/demo-test/test:helloworld-go\n          command: [%q]\n          env: [{name: %s, value: \"1\"}]\n", appBin, appEnv), 1)
	if article == string(b) {
		t.Fatal("examples/shared-gpu changed: the test no longer gives it a command")
	}
	keep := map[string]string{"autoscaling.knative.dev/min-scale": "1"}
	// One at a time, so the packing is the policy's, not the order of concurrent starts; a
	// small third GPU takes the article's 3 GiB replica (the fullest GPU that fits it).
	u := startUp(t, gpuService("a", 30, keep), "--gpus", "80Gi,80Gi,8Gi")
	u.waitReady("a")
	u.apply(t, gpuService("b", 30, keep))
	u.waitReady("b")
	u.apply(t, gpuService("c", 30, nil))
	u.waitReady("c")
	u.apply(t, article)
	u.waitReady("helloworld-gpu")
	gpus, err := u.client.GPUs(context.Background())
	if err != nil || len(gpus) != 3 {
		t.Fatalf("gpus %+v %v", gpus, err)
	}
	// Bin-packed, the fullest GPU that fits first: a and b on GPU 0, c on GPU 1, the
	// article's 3 GiB on the 8 GiB GPU 2.
	for i, want := range []int64{60, 30, 3} {
		if got := gpus[i].Reserved >> 30; got != want {
			t.Errorf("GPU %d: %d GiB reserved, want %d (%+v)", i, got, want, gpus[i].Replicas)
		}
	}
	for _, g := range gpus {
		if g.Source != "declared" || g.Used != 0 {
			t.Errorf("gpu %+v: want a declared device with nothing measured", g)
		}
	}
	out, code := u.infera(t, "", "get", "gpus")
	if code != 0 || !strings.Contains(out, "declared") || !strings.Contains(out, "30.0Gi") {
		t.Errorf("infera get gpus:\n%s", out)
	}
	for _, s := range []string{"a", "helloworld-gpu"} {
		code, mem := u.get(t, s+".default.localhost", "/env?k=ALIYUN_COM_GPU_MEM_CONTAINER")
		_, vis := u.get(t, s+".default.localhost", "/env?k=NVIDIA_VISIBLE_DEVICES")
		_, cuda := u.get(t, s+".default.localhost", "/env?k=CUDA_VISIBLE_DEVICES")
		want := map[string]string{"a": "30", "helloworld-gpu": "3"}[s]
		if code != 200 || mem != want || vis == "" || cuda != vis {
			t.Errorf("%s: ALIYUN_COM_GPU_MEM_CONTAINER=%q NVIDIA_VISIBLE_DEVICES=%q CUDA_VISIBLE_DEVICES=%q", s, mem, vis, cuda)
		}
	}

	// d (60 GiB) fits nowhere; a and b are at min-scale, c is busy: Pending with the reason.
	// Once c is idle, it hands GPU 1 over.
	stop := u.load(t, 1, "c.default.localhost", "/sleep?d=200ms")
	u.apply(t, gpuService("d", 60, nil))
	eventually(t, 30*time.Second, "d pending with ACK's reason", func() (bool, string) {
		rv, _ := u.revision(t, "d-00001")
		return rv.State == "Pending" && rv.Reason == "Unschedulable" && strings.Contains(rv.Message, "GiB free of 80 GiB"), rv.State + " " + rv.Message
	})
	cs, err := u.client.ColdStart(context.Background(), "default", "d-00001")
	if err != nil || cs.State != "Pending" || cs.Reason != "Unschedulable" || len(cs.Replicas) != 1 || cs.Replicas[0].State != "Pending" || !strings.Contains(cs.Replicas[0].Message, "GiB free") {
		t.Errorf("d's cold start while it waits: %+v %v", cs, err)
	}
	stop()
	// c idle: the hand-off (or c's own scale to zero) places d.
	u.waitReady("d")
	if code, body := u.get(t, "d.default.localhost", "/"); code != 200 || !strings.HasPrefix(body, "d-00001") {
		t.Errorf("d: %d %q", code, body)
	}
	if gpus, _ := u.client.GPUs(context.Background()); len(gpus) != 3 || gpus[1].Reserved>>30 != 60 || len(gpus[1].Replicas) != 1 || !strings.HasPrefix(gpus[1].Replicas[0].Replica, "d-00001") {
		t.Errorf("after the hand-off: %+v, want d alone on GPU 1", gpus)
	}
	out, _ = u.infera(t, "", "describe", "service", "d")
	if !strings.Contains(out, "GPU hand-off: stopped idle c-00001") {
		t.Errorf("describe d has no hand-off event:\n%s", out)
	}
}

// TestGPUHandoffNoThrash: two models of 60 GiB on one declared 80 GiB GPU (they cannot both
// fit) served alternately from zero: each request is served, through a held request, with one
// hand-off per switch, and none while a request is in flight on the holder.
func TestGPUHandoffNoThrash(t *testing.T) {
	zero := map[string]string{"autoscaling.knative.dev/initial-scale": "0"}
	u := startUp(t, zeroInitialScale+gpuService("m1", 60, zero)+"---\n"+gpuService("m2", 60, zero), "--gpus", "80Gi")
	for _, m := range []string{"m1", "m2"} {
		eventually(t, 30*time.Second, m+" at zero", func() (bool, string) {
			rv, ok := u.revision(t, m+"-00001")
			return ok && rv.Routed && rv.RunningReplicas == 0, rv.State
		})
	}
	served := func(m string) {
		t.Helper()
		if code, body := u.get(t, m+".default.localhost", "/"); code != 200 || !strings.HasPrefix(body, m+"-00001") {
			t.Fatalf("%s: %d %q\n%s", m, code, body, u.out)
		}
	}
	served("m1")
	base := u.handoffs(t)
	for i, m := range []string{"m2", "m1", "m2"} {
		served(m)
		if got := u.handoffs(t) - base; got != float64(i+1) {
			t.Fatalf("after switch %d to %s: %v hand-offs, want %d (one per switch)", i+1, m, got, i+1)
		}
	}
	// m2 holds the GPU with a request in flight: a request for m1 waits for it, then gets the GPU.
	var wg sync.WaitGroup
	var long int
	wg.Add(1)
	go func() {
		defer wg.Done()
		resp, err := u.do(http.MethodGet, "m2.default.localhost", "/sleep?d=2s", nil)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			long = resp.StatusCode
		}
	}()
	eventually(t, 10*time.Second, "m2's request in flight", func() (bool, string) {
		for _, r := range u.replicas(t) {
			if strings.HasPrefix(r.Name, "m2-") && r.InFlight == 1 {
				return true, ""
			}
		}
		return false, "none in flight"
	})
	before := u.handoffs(t)
	start := time.Now()
	served("m1")
	wg.Wait()
	if long != 200 {
		t.Errorf("m2's long request: %d, want 200 (never cut by a hand-off)", long)
	}
	if got := u.handoffs(t) - before; got != 1 {
		t.Errorf("%v hand-offs for the last switch, want 1", got)
	}
	if time.Since(start) < time.Second {
		t.Errorf("m1 was served after %v, before m2's 2 s request ended: the GPU was taken from a replica with work in flight", time.Since(start))
	}
}
