package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/infera-dev/infera/internal/adminapi"
	"github.com/infera-dev/infera/internal/container"
	"github.com/infera-dev/infera/internal/manifest"
	"github.com/infera-dev/infera/internal/testutil"
)

// pushApp pushes appImage(version) to ref and removes what the engine pulled of it when the test
// ends; it returns the manifest digest.
func pushApp(t *testing.T, cli *client.Client, ref, version string) string {
	t.Helper()
	d := testutil.PushImage(t, ref, testutil.BuildImage(t, appImage(t, version)))
	t.Cleanup(func() { testutil.RemoveImages(t, cli, ref, repoOf(ref)+"@"+d) })
	return d
}

// repoOf is ref without its tag.
func repoOf(ref string) string {
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		return ref[:i]
	}
	return ref
}

// stateDirContainer is a container that carries infera's state-dir label.
type stateDirContainer struct{ id, replica string }

// stateDirContainers is infraContainers with the containers' IDs: a replica of a new infera
// may be named as an old one was.
func stateDirContainers(t testing.TB, cli *client.Client, dir string) []stateDirContainer {
	t.Helper()
	f := make(client.Filters).Add("label", container.LabelStateDir+"="+dir)
	res, err := cli.ContainerList(context.Background(), client.ContainerListOptions{All: true, Filters: f})
	if err != nil {
		t.Fatal(err)
	}
	var out []stateDirContainer
	for _, c := range res.Items {
		out = append(out, stateDirContainer{c.ID, c.Labels[container.LabelReplica]})
	}
	return out
}

// startImageUp is startUpIn, on a new state directory when stateDir is "", for tests whose
// replicas are containers. When the test ends it stops infera with SIGTERM, which removes its
// containers (the harness's SIGKILL would leave them running: the engine owns them), then
// removes any that a killed infera left.
func startImageUp(t *testing.T, cli *client.Client, stateDir, manifests string, args ...string) *up {
	t.Helper()
	if stateDir == "" {
		stateDir = t.TempDir()
	}
	u := startUpIn(t, stateDir, manifests, args...)
	t.Cleanup(func() {
		if err := u.stop(syscall.SIGTERM); err != nil {
			t.Errorf("infera up exit: %v", err)
		}
		for _, c := range stateDirContainers(t, cli, stateDir) {
			_, _ = cli.ContainerRemove(context.Background(), c.id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		}
	})
	return u
}

// waitServing waits until service is Ready, and stops the test at once when its latest
// revision has Failed (a container that cannot start is retried only after a back-off).
func (u *up) waitServing(t *testing.T, service string) {
	t.Helper()
	eventually(t, 60*time.Second, "service "+service+" ready", func() (bool, string) {
		for _, rv := range u.revisions(t) {
			if rv.Service == service && rv.State == adminapi.StateFailed {
				t.Fatalf("revision %s failed: %s: %s", rv.Name, rv.Reason, rv.Message)
			}
		}
		for _, s := range u.services(t) {
			if s.Name == service {
				return s.Ready == "True", fmt.Sprintf("%+v", s)
			}
		}
		return false, "no such service"
	})
}

func (u *up) services(t testing.TB) []adminapi.ServiceView {
	t.Helper()
	svcs, err := u.client.Services(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return svcs
}

// replicasOf is the replicas of revision (its name, namespace default).
func (u *up) replicasOf(t testing.TB, revision string) []adminapi.Replica {
	var out []adminapi.Replica
	for _, r := range u.replicas(t) {
		if r.Revision == "default/"+revision {
			out = append(out, r)
		}
	}
	return out
}

// TestContainerCommandArgsOverride: with --runtime docker, a container's command replaces the
// image's entrypoint and its args follow, $(PORT) expanded; args alone follow the entrypoint.
func TestContainerCommandArgsOverride(t *testing.T) {
	cli := testutil.Docker(t)
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{})
	ref := reg.Addr() + "/e2e/httpapp:v1"
	pushApp(t, cli, ref, "1")

	both := imageService("cmdargs", ref, nil, "", `command: ["/httpapp"]
args: ["--port=$(PORT)", "--drain-delay=0s"]
`)
	argsOnly := imageService("argsonly", ref, nil, "", `args: ["--drain-delay=0s", "--ready-after=0s"]
`)
	u := startImageUp(t, cli, "", both+"---\n"+argsOnly, "--runtime", "docker")
	u.waitReady("cmdargs")
	u.waitReady("argsonly")

	if rv, _ := u.revision(t, "cmdargs-00001"); rv.Runtime != "docker" || rv.RuntimeReason != "infera up --runtime=docker" {
		t.Errorf("runtime %q (%q), want docker by the flag", rv.Runtime, rv.RuntimeReason)
	}
	_, port := u.get(t, "cmdargs.default.localhost", "/env?name=PORT")
	if port == "" {
		t.Fatal("the container has no PORT")
	}
	if code, body := u.get(t, "cmdargs.default.localhost", "/args"); code != 200 || body != "/httpapp\n--port="+port+"\n--drain-delay=0s" {
		t.Errorf("command and args: /args = %d %q, want /httpapp --port=%s --drain-delay=0s", code, body, port)
	}
	if code, body := u.get(t, "argsonly.default.localhost", "/args"); code != 200 || body != "/httpapp\n--drain-delay=0s\n--ready-after=0s" {
		t.Errorf("args only: /args = %d %q, want the image's entrypoint then the args", code, body)
	}
}

// TestContainerEnvSecretsVolumes: env literals and secretKeyRefs, a secret volume, an emptyDir,
// a readOnly host-path claim and two local Datasets reach a container that runs as 65534:65534
// with a read-only root filesystem, as they would a pod.
func TestContainerEnvSecretsVolumes(t *testing.T) {
	cli := testutil.Docker(t)
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{})
	ref := reg.Addr() + "/e2e/httpapp:v1"
	pushApp(t, cli, ref, "1")

	// The container runs as 65534: what it reads must be readable by others.
	dir := func(files map[string]string) string {
		d := t.TempDir()
		for name, content := range files {
			p := filepath.Join(d, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	pvcDir := dir(map[string]string{"shared.txt": "from the claim"})
	dsRoot := dir(map[string]string{"weights.bin": "local dataset"})
	dsNamed := dir(map[string]string{"config.json": "named mount"})

	manifests := fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: app-secret, namespace: default}
stringData:
  KEY: secret-file-value
  TOKEN: secret-env-value
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: shared
  namespace: default
  annotations: {%s: %q}
spec:
  accessModes: [ReadWriteOnce]
---
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {name: localds, namespace: default}
spec:
  mounts:
    - {mountPoint: "local://%s", name: weights, path: /}
---
apiVersion: data.fluid.io/v1alpha1
kind: Dataset
metadata: {name: nasds, namespace: default}
spec:
  mounts:
    - {mountPoint: %q, name: base}
---
`, manifest.HostPathAnnotation, pvcDir, dsRoot, dsNamed) + imageService("vols", ref, nil, `volumes:
  - {name: secret, secret: {secretName: app-secret}}
  - {name: scratch, emptyDir: {}}
  - {name: shared, persistentVolumeClaim: {claimName: shared}}
  - {name: models, persistentVolumeClaim: {claimName: localds}}
  - {name: nas, persistentVolumeClaim: {claimName: nasds}}
`, `securityContext:
  runAsUser: 65534
  runAsGroup: 65534
  readOnlyRootFilesystem: true
env:
  - {name: GREETING, value: hello}
  - name: TOKEN
    valueFrom: {secretKeyRef: {name: app-secret, key: TOKEN}}
volumeMounts:
  - {name: secret, mountPath: /etc/app}
  - {name: scratch, mountPath: /scratch}
  - {name: shared, mountPath: /shared, readOnly: true}
  - {name: models, mountPath: /models}
  - {name: nas, mountPath: /nas}
`)
	u := startImageUp(t, cli, "", manifests)
	u.waitServing(t, "vols")
	const host = "vols.default.localhost"
	for _, c := range []struct {
		path, want string
		why        string
	}{
		{"/env?name=GREETING", "hello", ""},
		{"/env?name=TOKEN", "secret-env-value", ""},
		{"/id", "uid=65534 gid=65534", ""},
		// Kubernetes' secret volumes default to mode 0644: any user reads them.
		{"/file?path=/etc/app/KEY", "secret-file-value", "(secret files must be 0644, as Kubernetes' defaultMode)"},
		// Kubernetes' emptyDir is 0777.
		{"/write?path=/scratch/x", "ok", "(an emptyDir must be 0777, as in Kubernetes)"},
		{"/file?path=/scratch/x", "x", "(an emptyDir must be 0777, as in Kubernetes)"},
		{"/file?path=/shared/shared.txt", "from the claim", ""},
		{"/file?path=/models/weights.bin", "local dataset", ""},
		// A mount with no path is at /<name> in the dataset, as Fluid has it.
		{"/file?path=/nas/base/config.json", "named mount", "(each mount of an in-place dataset bound where its link is)"},
	} {
		if code, body := u.get(t, host, c.path); code != 200 || body != c.want {
			t.Errorf("GET %s = %d %q, want 200 %q %s", c.path, code, body, c.want, c.why)
		}
	}
	for _, c := range []struct {
		path, why string
	}{
		{"/write?path=/shared/new", "a readOnly claim"},
		{"/write?path=/tmp/t", "the read-only root filesystem (/tmp is 1777 in the image)"},
		{"/write?path=/t", "the root filesystem"},
		{"/write?path=/etc/app/new", "a secret volume"},
	} {
		if code, body := u.get(t, host, c.path); code != 500 {
			t.Errorf("GET %s = %d %q: %s was writable", c.path, code, body, c.why)
		}
	}
	if _, err := os.Stat(filepath.Join(pvcDir, "new")); err == nil {
		t.Errorf("the readOnly claim's directory got a file")
	}
	if strings.Contains(u.out.String(), "secret-env-value") || strings.Contains(u.out.String(), "secret-file-value") {
		t.Errorf("infera up's log shows a secret's value")
	}
}

// TestContainerExecProbe: an exec readiness probe runs inside the container: one whose file is
// there makes the replica Ready, one whose file is missing keeps it from being Ready.
func TestContainerExecProbe(t *testing.T) {
	cli := testutil.Docker(t)
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{})
	ref := reg.Addr() + "/e2e/httpapp:v1"
	pushApp(t, cli, ref, "1")

	probed := func(name, file string) string {
		return imageService(name, ref, nil, `volumes:
  - {name: probe, secret: {secretName: probe}}
`, fmt.Sprintf(`volumeMounts:
  - {name: probe, mountPath: /etc/app}
readinessProbe:
  exec: {command: ["/httpapp", "--probe-file=%s"]}
  periodSeconds: 1
`, file))
	}
	u := startImageUp(t, cli, "", `apiVersion: v1
kind: Secret
metadata: {name: probe, namespace: default}
stringData: {ready: "yes"}
---
`+probed("execok", "/etc/app/ready")+"---\n"+probed("execbad", "/etc/app/missing"))
	u.waitServing(t, "execok")
	if code, body := u.get(t, "execok.default.localhost", "/"); code != 200 || body != "hello from execok-00001 version=1\n" {
		t.Errorf("GET / = %d %q", code, body)
	}
	// The other's probe has run (and failed) for at least two periods since its container
	// started: it must not be Ready.
	eventually(t, 30*time.Second, "execbad's container probed for two periods", func() (bool, string) {
		reps := u.replicasOf(t, "execbad-00001")
		if len(reps) != 1 {
			return false, fmt.Sprintf("replicas %+v", reps)
		}
		r := reps[0]
		if r.State == "Ready" {
			t.Fatalf("execbad's replica is Ready though its exec probe's file is missing: %+v", r)
		}
		return !r.Started.IsZero() && time.Since(r.Started) > 2500*time.Millisecond, fmt.Sprintf("%+v", r)
	})
	if r := u.replicasOf(t, "execbad-00001"); len(r) != 1 || (r[0].State != "Starting" && r[0].State != "NotReady") {
		t.Errorf("execbad's replica %+v, want Starting or NotReady", r)
	}
	if rv, _ := u.revision(t, "execbad-00001"); rv.Ready == "True" {
		t.Errorf("execbad-00001 is Ready: %+v", rv)
	}
}

// TestContainerCrashBackOff: a container that exits at start fails its revision with its last
// log line, goes to CrashLoopBackOff, and `infera logs` shows what it printed.
func TestContainerCrashBackOff(t *testing.T) {
	cli := testutil.Docker(t)
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{})
	ref := reg.Addr() + "/e2e/httpapp:v1"
	pushApp(t, cli, ref, "1")

	u := startImageUp(t, cli, "", imageService("crashy", ref, nil, "", `args: ["--fail-start"]
`))
	eventually(t, 30*time.Second, "revision Failed and replica in CrashLoopBackOff", func() (bool, string) {
		rv, _ := u.revision(t, "crashy-00001")
		var states []string
		for _, r := range u.replicasOf(t, "crashy-00001") {
			states = append(states, r.State)
		}
		return rv.State == adminapi.StateFailed && strings.Contains(rv.Message, "httpapp failing on purpose") &&
			slices.Contains(states, "CrashLoopBackOff"), fmt.Sprintf("revision %+v, replicas %v", rv, states)
	})
	if out, code := u.infera(t, "", "logs", "crashy"); code != 0 || !strings.Contains(out, "httpapp failing on purpose") {
		t.Errorf("infera logs crashy: exit %d\n%s", code, out)
	}
}

// TestContainerRolloutZeroErrors: a new revision of an image service takes over under load with
// no failed request, and the old revision's containers are removed.
func TestContainerRolloutZeroErrors(t *testing.T) {
	cli := testutil.Docker(t)
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{})
	ref := reg.Addr() + "/e2e/httpapp:v1"
	pushApp(t, cli, ref, "1")

	svc := func(v string) string {
		return imageService("croll", ref, nil, "", fmt.Sprintf("env: [{name: V, value: %q}]\n", v))
	}
	u := startImageUp(t, cli, "", svc("1"))
	u.waitReady("croll")
	stop := u.load(t, 4, "croll.default.localhost", "/")
	u.apply(t, svc("2"))
	eventually(t, 60*time.Second, "croll-00002 serving, croll-00001's replicas and containers gone", func() (bool, string) {
		_, body := u.get(t, "croll.default.localhost", "/")
		if body != "hello from croll-00002 version=1\n" {
			return false, "GET / = " + body
		}
		if old := u.replicasOf(t, "croll-00001"); len(old) > 0 {
			return false, fmt.Sprintf("old replicas %+v", old)
		}
		var want []string
		for _, r := range u.replicasOf(t, "croll-00002") {
			want = append(want, r.Name)
		}
		got := infraContainers(t, cli, u.stateDir)
		slices.Sort(want)
		slices.Sort(got)
		return slices.Equal(got, want), fmt.Sprintf("containers %v, croll-00002's replicas %v", got, want)
	})
	if bad := stop(); bad != 0 {
		t.Errorf("%d requests failed during the rollout", bad)
	}
}

// TestContainerSIGKILLThenRestartLeavesNoStray: containers outlive a SIGKILLed infera (the
// engine owns them); the next infera on the same state directory removes them and serves with
// new ones.
func TestContainerSIGKILLThenRestartLeavesNoStray(t *testing.T) {
	cli := testutil.Docker(t)
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{})
	ref := reg.Addr() + "/e2e/httpapp:v1"
	pushApp(t, cli, ref, "1")

	u := startImageUp(t, cli, "", imageService("orphan", ref, map[string]string{"autoscaling.knative.dev/min-scale": "2"}, "", ""))
	eventually(t, 60*time.Second, "two replicas ready", func() (bool, string) {
		n := 0
		for _, r := range u.replicasOf(t, "orphan-00001") {
			if r.State == "Ready" {
				n++
			}
		}
		return n == 2, fmt.Sprintf("%+v", u.replicas(t))
	})
	u.cmd.Process.Signal(syscall.SIGKILL) // infera only: the containers are the engine's
	<-u.done
	u.done <- nil
	old := stateDirContainers(t, cli, u.stateDir)
	if len(old) != 2 {
		t.Fatalf("containers after SIGKILL: %+v, want the 2 replicas' still there", old)
	}

	u2 := startImageUp(t, cli, u.stateDir, "")
	eventually(t, 30*time.Second, "the killed infera's containers removed", func() (bool, string) {
		now := stateDirContainers(t, cli, u.stateDir)
		for _, c := range old {
			if slices.Contains(now, c) {
				return false, fmt.Sprintf("containers %+v, old %+v", now, old)
			}
		}
		return true, ""
	})
	u2.waitReady("orphan")
	if code, body := u2.get(t, "orphan.default.localhost", "/"); code != 200 || body != "hello from orphan-00001 version=1\n" {
		t.Errorf("after the restart GET / = %d %q", code, body)
	}
	eventually(t, 30*time.Second, "two new containers, one per replica", func() (bool, string) {
		var want []string
		for _, r := range u2.replicasOf(t, "orphan-00001") {
			want = append(want, r.Name)
		}
		var got []string
		for _, c := range stateDirContainers(t, cli, u.stateDir) {
			got = append(got, c.replica)
		}
		slices.Sort(want)
		slices.Sort(got)
		return len(got) == 2 && slices.Equal(got, want), fmt.Sprintf("containers %v, replicas %v", got, want)
	})
}

// waitPullFailed waits until revision has failed to pull its image: Failed with a pull reason,
// its replica in ImagePullBackOff; it returns the revision.
func (u *up) waitPullFailed(t *testing.T, revision string) adminapi.RevisionView {
	t.Helper()
	var rv adminapi.RevisionView
	eventually(t, 30*time.Second, revision+" failed to pull", func() (bool, string) {
		rv, _ = u.revision(t, revision)
		var states []string
		for _, r := range u.replicasOf(t, revision) {
			states = append(states, r.State)
		}
		return rv.State == adminapi.StateFailed && (rv.Reason == "ErrImagePull" || rv.Reason == "ImagePullBackOff") &&
			slices.Contains(states, "ImagePullBackOff"), fmt.Sprintf("revision %+v, replicas %v", rv, states)
	})
	return rv
}

// TestImagePullFailureThenBackOff: an image that is not in the registry fails the revision
// (ErrImagePull, then ImagePullBackOff) naming it; once pushed, the next pull after the 10 s
// back-off starts it.
func TestImagePullFailureThenBackOff(t *testing.T) {
	cli := testutil.Docker(t)
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{})
	ref := reg.Addr() + "/e2e/missing:v1"
	t.Cleanup(func() { testutil.RemoveImages(t, cli, ref) })

	u := startImageUp(t, cli, "", imageService("nopull", ref, nil, "", ""))
	rv := u.waitPullFailed(t, "nopull-00001")
	if !strings.Contains(rv.Message, ref) {
		t.Errorf("message %q does not name the image %s", rv.Message, ref)
	}
	pushApp(t, cli, ref, "1")
	eventually(t, 25*time.Second, "nopull ready after the pull back-off", func() (bool, string) {
		rv, _ := u.revision(t, "nopull-00001")
		return rv.Ready == "True", fmt.Sprintf("%+v replicas %+v", rv, u.replicas(t))
	})
	u.waitReady("nopull")
	if code, body := u.get(t, "nopull.default.localhost", "/"); code != 200 || body != "hello from nopull-00001 version=1\n" {
		t.Errorf("GET / = %d %q", code, body)
	}
}

// TestImagePullSecret: a registry that wants credentials refuses a pull without
// imagePullSecrets; with a kubernetes.io/dockerconfigjson Secret the new revision pulls and
// serves, and the password shows nowhere.
func TestImagePullSecret(t *testing.T) {
	const user, pass = "e2e-puller", "pw-7f3a9c-never-in-logs"
	cli := testutil.Docker(t)
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{Username: user, Password: pass})
	ref := reg.Addr() + "/e2e/private:v1"
	d := testutil.PushImageAuth(t, ref, testutil.BuildImage(t, appImage(t, "1")), user, pass)
	t.Cleanup(func() { testutil.RemoveImages(t, cli, ref, repoOf(ref)+"@"+d) })

	u := startImageUp(t, cli, "", imageService("priv", ref, nil, "", ""))
	rv := u.waitPullFailed(t, "priv-00001")
	if m := strings.ToLower(rv.Message); !strings.Contains(m, "unauthorized") && !strings.Contains(m, "credentials") {
		t.Errorf("message %q does not say the registry wants credentials", rv.Message)
	}

	u.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: regcred, namespace: default}
type: kubernetes.io/dockerconfigjson
stringData:
  .dockerconfigjson: '{"auths":{%q:{"username":%q,"password":%q}}}'
---
`, reg.Addr(), user, pass)+imageService("priv", ref, nil, "imagePullSecrets: [{name: regcred}]\n", ""))
	eventually(t, 30*time.Second, "priv-00002 ready", func() (bool, string) {
		rv, _ := u.revision(t, "priv-00002")
		return rv.Ready == "True", fmt.Sprintf("%+v", rv)
	})
	eventually(t, 30*time.Second, "priv-00002 serving", func() (bool, string) {
		code, body := u.get(t, "priv.default.localhost", "/")
		return code == 200 && body == "hello from priv-00002 version=1\n", fmt.Sprintf("%d %q", code, body)
	})
	if strings.Contains(u.out.String(), pass) {
		t.Errorf("infera up's log shows the registry password")
	}
	for _, args := range [][]string{{"get", "revisions", "-o", "json"}, {"describe", "service", "priv", "-o", "json"}, {"get", "replicas"}} {
		if out, _ := u.infera(t, "", args...); strings.Contains(out, pass) {
			t.Errorf("infera %v shows the registry password", args)
		}
	}
}

// TestImageDigestPinnedWhenTagMoves: a revision keeps the digest its first replica ran, across
// a restart of infera, even with imagePullPolicy Always and its tag moved; a new revision
// runs what the tag names now.
func TestImageDigestPinnedWhenTagMoves(t *testing.T) {
	cli := testutil.Docker(t)
	reg := testutil.StartRegistry(t, testutil.RegistryOptions{})
	ref := reg.Addr() + "/e2e/moving:stable"
	d1 := pushApp(t, cli, ref, "1")

	svc := func(x string) string {
		return imageService("moving", ref, nil, "", fmt.Sprintf("imagePullPolicy: Always\nenv: [{name: X, value: %q}]\n", x))
	}
	u := startImageUp(t, cli, "", svc("1"))
	u.waitReady("moving")
	if code, body := u.get(t, "moving.default.localhost", "/"); code != 200 || body != "hello from moving-00001 version=1\n" {
		t.Fatalf("GET / = %d %q", code, body)
	}
	pushApp(t, cli, ref, "2") // the tag moves

	if err := u.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("infera up exit: %v\n%s", err, u.out)
	}
	u2 := startImageUp(t, cli, u.stateDir, "")
	u2.waitReady("moving")
	if code, body := u2.get(t, "moving.default.localhost", "/"); code != 200 || body != "hello from moving-00001 version=1\n" {
		t.Errorf("after the restart GET / = %d %q, want the pinned version=1", code, body)
	}
	if rv, _ := u2.revision(t, "moving-00001"); rv.ImageDigest != repoOf(ref)+"@"+d1 {
		t.Errorf("moving-00001's image digest %q, want %s@%s", rv.ImageDigest, repoOf(ref), d1)
	}

	u2.apply(t, svc("2"))
	eventually(t, 60*time.Second, "moving-00002 serving the moved tag", func() (bool, string) {
		code, body := u2.get(t, "moving.default.localhost", "/")
		return code == 200 && body == "hello from moving-00002 version=2\n", fmt.Sprintf("%d %q", code, body)
	})
}
