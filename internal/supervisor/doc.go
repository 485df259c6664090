// Package supervisor runs the replicas of revisions on this machine, the way a Knative pod runs
// its user container: Knative's runtime contract in the environment, volumes at their
// mountPath, readiness / liveness / startup probes, graceful drain on stop and kubelet's crash
// back-off.
//
// # Runtimes
//
// What starts, signals and waits for a replica's program is a Runtime, picked per revision by
// workload.Container.Runtime: "process" (built in, described below: a child process of infera)
// or any runtime in Config.Runtimes ("docker": internal/dockerrt, a container of the image).
// Everything else here (probes, readiness gating, drain, grace, back-off, logs, scale-down
// choice) is the same code for every runtime. A runtime's start that fails for a reason the
// kubelet names (a *StartError: ErrImagePull, CreateContainerConfigError, ...) is reported
// with that reason; a failed image pull waits out the kubelet's image back-off (10 s doubling to
// 5 min) in state ImagePullBackOff instead of the crash back-off. Exec probes run through the
// instance (Instance.Exec): in the sandbox for a process, in the container for an image. The
// first replica of a revision that runs an image pins it (RevisionStatus.ImageDigest), and
// every later replica of that revision runs the same image.
//
// # Replicas
//
// A replica is one child process started from Container.Command + Args with Container.Env and
// WorkingDir. It inherits infera's own environment (so PATH, HOME and CUDA settings work as on
// the command line), then gets the container's env, then Knative's:
//
//	PORT=<a free loopback port, one per replica>  K_SERVICE  K_CONFIGURATION  K_REVISION
//
// The app must listen on 127.0.0.1:$PORT (or any address covering it). Replica names are
// "<revision>-<5 random characters>", e.g. "llm-00001-x7k2q". Env values marked Secret are
// passed to the process but never logged by infera, and are replaced by "[redacted]" in the
// replica's own log output.
//
// Every replica process is the leader of its own process group (Setpgid) and is started from
// one dedicated, locked OS thread with Pdeathsig SIGKILL, so no replica outlives infera even
// when infera is SIGKILLed. After a replica's main process exits, the rest of its process
// group is SIGKILLed, as a container's are.
//
// # Volumes and the sandbox
//
// With Sandbox "auto" (the default) or "bwrap", a replica of a revision with volumes runs under
// bubblewrap in a private mount namespace: the host's filesystem stays visible (--bind / /,
// --dev-bind /dev /dev, --proc /proc), the network namespace is shared, and each volume is
// bound at its MountPath: host paths with --bind, emptyDir as a per-replica scratch directory
// under Dir/run/<replica>/ (it survives restarts of the replica, like a pod's emptyDir),
// secret and configMap files written 0644 (Kubernetes' defaultMode; Dir/run/ itself is 0700) into a per-replica directory and bound read-only; emptyDirs are 0777, as in Kubernetes.
// SubPath and ReadOnly are honoured. When infera is not root, --unshare-user is added.
// bubblewrap creates a missing mount point as an empty directory (or file) on the host,
// because / is bound, not copied. Exec probes run in the same sandbox (a second bwrap with the
// same binds), so they see what the app sees.
//
// A revision without volumes, or any revision with Sandbox "none", runs its process directly.
// With Sandbox "none" volumes cannot appear at their MountPath; each one is placed in a
// per-replica directory instead (a host path is used in place) and the app is told where by
//
//	INFERA_VOLUME_<NAME>=<path>
//
// where NAME is the volume name upper-cased with every character other than A-Z and 0-9
// replaced by "_". ReadOnly is not enforced in that mode. When a revision has volumes, Sandbox
// is "auto" and no bwrap is found, its replicas fail with ErrNoSandbox, whose message names
// --sandbox=none; the reason shows in Status(id).Message.
//
// # States
//
//	            start                 probes pass              probes fail
//	(new) ---> Starting ------------------------> Ready <-------------------> NotReady
//	             ^  |                               |                            |
//	             |  | exits / liveness fails        | exits / liveness fails     |
//	             |  v                               v                            v
//	             |  +-- first exit, or 10 min after the last restart: restart at once
//	             +----- CrashLoopBackOff (10s, 20s, 40s ... 5 min, kubelet's numbers)
//
//	any state --Scale down / Remove / Shutdown--> Terminating --> (gone)
//
// Only Ready replicas are sent to Gateway.SetEndpoints, which is called again on every change
// of a revision's ready set. Config.OnReplica hears of each process start and each readiness
// change first, with the replica's Created, Started and ReadySince times: the process start
// and readiness phases of a cold start.
//
// # Probes
//
// Probes run as Knative and the kubelet run them: HTTP GET (200-399 is success; User-Agent
// "kube-probe/1.35" and K-Kubelet-Probe are sent, plus the probe's headers), TCP connect, exec
// (exit status 0) and gRPC (grpc.health.v1.Health/Check for the probe's Service through
// google.golang.org/grpc, without TLS; SERVING is success, NOT_SERVING, an unknown service and
// errors are failures). An HTTP probe connects afresh each time, as the kubelet's does; a gRPC
// probe keeps its connection while the process runs and dials again after a check that could
// not reach the server or timed out. A revision without a readiness probe gets Knative's
// default: TCP on PORT. A probe port of 0 or the container's port means the replica's PORT.
//
// A readiness probe with periodSeconds 0 is Knative's aggressive probe, 100 ms timeout, until
// SuccessThreshold successes in a row. While a replica starts, infera checks faster than
// Knative's every 50 ms: after 1 ms, then each wait an eighth longer, reaching 50 ms at the 35th
// (0.43 s; startingBackoff), so a replica ready T after its first check is seen by T + T/8 + 1 ms
// (a refused loopback connect costs about 10 us). Once ready it is checked every
// second, and a failing check is retried every 50 ms for up to 10 s (queue-proxy's poll
// timeout) before the replica becomes NotReady. Other probes follow the kubelet: first check
// after InitialDelay, then every Period with Timeout (defaults 10 s and 1 s), SuccessThreshold
// / FailureThreshold in a row (defaults 1 and 3). A startup probe gates both others; a failing
// liveness or startup probe restarts the replica (counted as a restart, subject to back-off).
// As in Knative, an exec readiness probe is the kubelet's (period 0 means its default of 10 s)
// and the port is also probed over TCP on the readiness probe's schedule; ready needs both.
// HTTPS probes are refused with an error naming the scheme.
//
// # Stopping
//
// A replica being stopped is removed from the endpoints at once, then Gateway.WaitIdle waits
// for its in-flight requests (bounded by Revision.Timeout), then its process group gets
// SIGTERM (with bwrap: every member but bwrap itself, so bwrap can pass the exit status on), and
// SIGKILL when the grace period (Revision.Timeout, Knative's terminationGracePeriodSeconds),
// counted from the start of the stop, has passed, with at least 2 s after SIGTERM as the kubelet
// grants. Scale-down picks replicas that are not ready first, then idle ones
// (Gateway.InFlight == 0), then the newest.
//
// # Time
//
// Every time the supervisor reads and every wait it makes are on Config.Clock (clock.Real when
// nil), so tests can drive them with testutil.FakeClock: back-off, the drain and grace period
// (clock.WithTimeout), probe initial delays and periods, readiness polling's 10 s, and the
// second a dead process's output may take to drain. One thing runs on the wall clock: a
// single probe's timeout, which bounds I/O that the kernel and net, net/http, gRPC and os/exec
// time on the wall clock themselves; a probe of a hung app ends even while a fake clock
// stands still.
//
// # Logs
//
// Stdout and stderr of a replica go, line by line, into a ring buffer (Config.LogBytes, default
// 1 MiB) and to Dir/logs/<replica>.log, rotated to <replica>.log.1 at Config.LogFileBytes
// (default 10 MiB). Logs(replica) reads both, also after the replica stopped (and after a
// restart of infera, as long as the files are there); LogTail(replica) returns the ring of a
// live replica. ReplicaStatus.PID is the group leader: bwrap's pid when sandboxed. The logs
// of the last MaxStoppedLogs stopped replicas are kept; older ones are deleted. Dir/run/ holds
// only live replicas' scratch: it is removed when a replica stops and emptied by New.
package supervisor
