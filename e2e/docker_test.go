package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/moby/moby/client"

	"github.com/infera-dev/infera/internal/container"
	"github.com/infera-dev/infera/internal/testutil"
)

// appImage is an image of httpapp built from scratch: /httpapp as its entrypoint, no cmd, the
// version baked in as env APP_VERSION.
func appImage(t testing.TB, version string) testutil.ImageSpec {
	t.Helper()
	return testutil.ImageSpec{
		Files:      map[string]testutil.ImageFile{"/httpapp": {HostPath: httpappBin(t), Mode: 0o755}},
		Entrypoint: []string{"/httpapp"},
		Env:        []string{"APP_VERSION=" + version},
	}
}

var (
	httpappOnce sync.Once
	httpappPath string
)

func httpappBin(t testing.TB) string {
	httpappOnce.Do(func() { httpappPath = testutil.StaticBinary(t, testutil.HTTPApp) })
	return httpappPath
}

// imageService is a Service running image (with no command unless containerExtra gives one);
// containerExtra goes under the container (indented there), specExtra under the revision
// spec, annotations on the template (beside the 6 s window every e2e Service has).
func imageService(name, image string, annotations map[string]string, specExtra, containerExtra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: %s
  namespace: default
spec:
  template:
    metadata:
      annotations:
        autoscaling.knative.dev/window: "6s"
`, name)
	for k, v := range annotations {
		fmt.Fprintf(&b, "        %s: %q\n", k, v)
	}
	b.WriteString("    spec:\n")
	if specExtra != "" {
		b.WriteString(indent(specExtra, 6))
	}
	fmt.Fprintf(&b, "      containers:\n        - image: %s\n", image)
	if containerExtra != "" {
		b.WriteString(indent(containerExtra, 10))
	}
	return b.String()
}

// infraContainers lists the engine's containers that carry infera's state-dir label for dir.
func infraContainers(t testing.TB, cli *client.Client, dir string) []string {
	t.Helper()
	f := make(client.Filters).Add("label", container.LabelStateDir+"="+dir)
	res, err := cli.ContainerList(context.Background(), client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range res.Items {
		out = append(out, c.Labels[container.LabelReplica])
	}
	return out
}

// TestImageServedEndToEnd: a Service that names an image and no command runs as a container
// (runtime auto, an engine answers), is served through the gateway, pins its image by digest,
// and leaves no container behind when infera stops.
func TestImageServedEndToEnd(t *testing.T) {
	cli := testutil.Docker(t)
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{})
	ref := reg.Addr() + "/e2e/httpapp:v1"
	digest := testutil.PushImage(t, ref, testutil.BuildImage(t, appImage(t, "1")))
	t.Cleanup(func() { testutil.RemoveImages(t, cli, ref) })

	u := startUp(t, imageService("img", ref, nil, "", ""))
	u.waitReady("img")
	if code, body := u.get(t, "img.default.localhost", "/"); code != 200 || body != "hello from img-00001 version=1\n" {
		t.Fatalf("GET / = %d %q", code, body)
	}
	rv, _ := u.revision(t, "img-00001")
	if rv.Runtime != "docker" || !strings.HasPrefix(rv.RuntimeReason, "auto: no command") {
		t.Errorf("runtime %q (%q), want docker chosen by auto", rv.Runtime, rv.RuntimeReason)
	}
	if want := reg.Addr() + "/e2e/httpapp@" + digest; rv.ImageDigest != want {
		t.Errorf("image digest %q, want %q", rv.ImageDigest, want)
	}
	if cs := rv.LastColdStart; cs == nil || cs.ImageMs == nil || *cs.ImageMs <= 0 {
		t.Errorf("last cold start %+v: want an image phase (the pull)", cs)
	}
	reps := u.replicas(t)
	if len(reps) != 1 || reps[0].Runtime != "docker" || reps[0].ImageSource != "pulled" {
		t.Errorf("replicas %+v, want one docker replica that pulled its image", reps)
	}
	if got := infraContainers(t, cli, u.stateDir); len(got) != 1 {
		t.Errorf("containers with the state-dir label: %v, want 1", got)
	}
	if err := u.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("infera up exit: %v\n%s", err, u.out)
	}
	if got := infraContainers(t, cli, u.stateDir); len(got) != 0 {
		t.Errorf("containers left after infera up stopped: %v", got)
	}
}
