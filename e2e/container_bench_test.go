package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/infera-dev/infera/internal/testutil"
)

// firstRequest applies a Service at initial-scale 0, waits until its revision stands at zero,
// and times its first request: the cold start of one replica, to its first response.
func firstRequest(b *testing.B, u *up, name, manifest string) time.Duration {
	b.Helper()
	u.apply(b, manifest)
	eventually(b, 60*time.Second, name+" at zero", func() (bool, string) {
		r, ok := u.revision(b, name+"-00001")
		return ok && r.Routed && r.Decision != nil && r.Decision.Desired == 0 && r.RunningReplicas == 0, fmt.Sprintf("%+v", r)
	})
	start := time.Now()
	resp, err := u.do("GET", name+".default.localhost", "/", nil)
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("%s: %v %v\n%s", name, err, resp, u.out)
	}
	resp.Body.Close()
	return time.Since(start)
}

// BenchmarkContainerColdStart: the same app (httpapp) cold-started three ways in one run, each
// to its first response: as a process through infera, as a container through infera (its
// image present in the engine), and as a bare `docker run --network host` polled until it
// accepts a connection, then called once (the anchor). Reported: p50s, and the container's
// overhead over the anchor as a ratio (goal: under 1.10).
//
//	go test -run '^$' -bench ContainerColdStart -benchtime 5x ./e2e/
func BenchmarkContainerColdStart(b *testing.B) {
	cli := testutil.Docker(b)
	reg := testutil.StartRegistry(b, testutil.RegistryOptions{})
	ref := reg.Addr() + "/bench/httpapp:v1"
	testutil.PushImage(b, ref, testutil.BuildImage(b, appImage(b, "1")))
	b.Cleanup(func() { testutil.RemoveImages(b, cli, ref) })
	if out, err := exec.Command("docker", "pull", ref).CombinedOutput(); err != nil {
		b.Fatalf("docker pull: %v\n%s", err, out)
	}
	u := startUp(b, zeroInitialScale)
	zero := map[string]string{"autoscaling.knative.dev/initial-scale": "0"}
	var proc, ctr, anchor []time.Duration
	n := 0
	for b.Loop() {
		n++
		p := fmt.Sprintf("proc%d", n)
		proc = append(proc, firstRequest(b, u, p, imageService(p, "bench-process", zero, "", fmt.Sprintf("command: [%q]\n", httpappBin(b)))))
		c := fmt.Sprintf("ctr%d", n)
		ctr = append(ctr, firstRequest(b, u, c, imageService(c, ref, zero, "", "")))
		anchor = append(anchor, dockerRun(b, ref))
	}
	pm, cm, am := median(proc), median(ctr), median(anchor)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(pm), "process-p50-ms")
	b.ReportMetric(ms(cm), "container-p50-ms")
	b.ReportMetric(ms(am), "docker-run-p50-ms")
	b.ReportMetric(float64(cm)/float64(am), "container/docker-run")
	b.Logf("process %v, container %v, docker run %v", proc, ctr, anchor)
}

// dockerRun is the anchor: `docker run -d --network host` of the image with PORT set, polled
// until it accepts a connection, then one request; the container is removed afterwards.
func dockerRun(b *testing.B, ref string) time.Duration {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	name := "infera-bench-anchor-" + strconv.Itoa(port)
	start := time.Now()
	if out, err := exec.Command("docker", "run", "-d", "--name", name, "--network", "host", "-e", "PORT="+strconv.Itoa(port), "-e", "K_REVISION=anchor", ref).CombinedOutput(); err != nil {
		b.Fatalf("docker run: %v\n%s", err, out)
	}
	defer exec.Command("docker", "rm", "-f", name).Run()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	if !testutil.Poll(30*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}) {
		b.Fatal("anchor container did not listen")
	}
	resp, err := httpClient.Get("http://" + addr + "/")
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	return time.Since(start)
}

// BenchmarkImageCacheFirstReplica: the first replica of a revision (request to first
// response, from zero) whose image must be pulled from the loopback registry, against one whose
// image an ImageCache pre-pulled. Each iteration builds two fresh images of the same size
// (BENCH_IMAGE_MIB of incompressible data, default 64), so neither is in the engine before.
//
//	go test -run '^$' -bench ImageCacheFirstReplica -benchtime 3x ./e2e/
func BenchmarkImageCacheFirstReplica(b *testing.B) {
	cli := testutil.Docker(b)
	reg := testutil.StartRegistry(b, testutil.RegistryOptions{})
	mib := 64
	if v, err := strconv.Atoi(os.Getenv("BENCH_IMAGE_MIB")); err == nil && v > 0 {
		mib = v
	}
	image := func(name string) string {
		blob := make([]byte, mib<<20)
		rand.Read(blob)
		spec := appImage(b, name)
		spec.Files["/weights.bin"] = testutil.ImageFile{Data: blob, Mode: 0o644}
		ref := reg.Addr() + "/bench/" + name + ":v1"
		testutil.PushImage(b, ref, testutil.BuildImage(b, spec))
		b.Cleanup(func() { testutil.RemoveImages(b, cli, ref) })
		return ref
	}
	u := startUp(b, zeroInitialScale)
	zero := map[string]string{"autoscaling.knative.dev/initial-scale": "0"}
	var pulled, cached []time.Duration
	n := 0
	for b.Loop() {
		b.StopTimer()
		n++
		pullRef, cacheRef := image(fmt.Sprintf("pull%d", n)), image(fmt.Sprintf("cache%d", n))
		cacheName := fmt.Sprintf("bench%d", n)
		u.apply(b, fmt.Sprintf("apiVersion: eci.alibabacloud.com/v1\nkind: ImageCache\nmetadata:\n  name: %s\nspec:\n  images: [%q]\n", cacheName, cacheRef))
		eventually(b, 120*time.Second, "image cache ready", func() (bool, string) {
			cs, err := u.client.ImageCaches(context.Background())
			if err != nil {
				return false, err.Error()
			}
			for _, c := range cs {
				if c.Name == cacheName {
					return c.Phase == "Ready", c.Phase
				}
			}
			return false, "not listed"
		})
		b.StartTimer()
		p := fmt.Sprintf("pulls%d", n)
		pulled = append(pulled, firstRequest(b, u, p, imageService(p, pullRef, zero, "", "")))
		c := fmt.Sprintf("cached%d", n)
		cached = append(cached, firstRequest(b, u, c, imageService(c, cacheRef, map[string]string{
			"autoscaling.knative.dev/initial-scale": "0", "k8s.aliyun.com/eci-image-cache": "true"}, "", "")))
	}
	pm, cm := median(pulled), median(cached)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(pm), "pull-p50-ms")
	b.ReportMetric(ms(cm), "cached-p50-ms")
	b.ReportMetric(float64(pm)/float64(cm), "pull/cached")
	b.Logf("pull %v, cached %v (%d MiB images)", pulled, cached, mib)
}
