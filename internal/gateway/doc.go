// Package gateway is infera's data plane: Knative's activator, load balancer and queue-proxy
// breaker in one HTTP hop, in front of a revision's replicas on loopback.
//
// # Request path
//
//	client ──▶ route ──────────▶ activator ─────────────▶ balancer ──▶ breaker ───▶ replica
//	           Host, tag host,   held in a bounded FIFO   fewest in    CC in flight
//	           OpenAI "model"    while no replica is      flight,      + 10 x CC
//	           (404 otherwise)   ready (OnDemand once)    ties RR      queued (503)
//
// Routing: the Host header without its port is a route's {service}.{namespace}.{domain} (its
// traffic split, by smooth weighted round robin) or a tag host {tag}-{service}... (the tagged
// revision). Otherwise POST /v1/... routes by the "model" field of its JSON body: the gateway
// reads at most ModelPeekBytes of it and replays those bytes ahead of the rest, so the
// replica reads the body unchanged and still streamed. A host match wins over a model match.
// GET /v1/models[/{id}] on a Host no route has is the gateway's own OpenAI model list of every
// model it routes by name, answered from the routing table without waking anything (models.go).
//
// Slots: every request takes a slot on one ready replica before it is forwarded and gives it
// back when its response ends. Which queue a request waits in follows Knative:
//
//   - Activator in the path (SetActivatorInPath true, the default): the request waits in the
//     revision's FIFO (Config.QueueDepth, 503 with Retry-After beyond) until a ready replica
//     has a free slot (containerConcurrency, unlimited when 0). The breaker never says 503.
//   - Activator out of the path: the request goes to the least loaded ready replica and waits
//     in that replica's breaker queue (10 x containerConcurrency) when its slots are taken;
//     beyond that, 503 "pending request queue full".
//   - No ready replica: the request is held in the revision's FIFO in either mode, and the
//     first such request of a cold episode calls Config.OnDemand. Each held request calls
//     Config.OnFirstByte when its replica's response starts: the end of its cold start.
//
// A held request is its handler goroutine (net/http's own) parked on a one-slot channel,
// plus about a kilobyte of state: no goroutine of the gateway's (BenchmarkHeldRequestMemory).
//
// # Timeouts (Knative's queue-proxy timeout handler, counted from arrival)
//
//	Revision.Timeout               whole request, queueing included
//	Revision.ResponseStartTimeout  until the replica's response headers
//	Revision.IdleTimeout           between writes to the client (and until the first)
//
// Before the response started each gives 504 with the body "request timeout"; after, the
// body ends with "request timeout" and the response is ended there, as Knative does. Timers
// are armed and idle time is measured on Config.Clock (clock.Real by default).
//
// # Forwarding
//
// Hop-by-hop headers are stripped both ways ("TE: trailers" kept for gRPC); X-Forwarded-For
// gets the client's address appended and X-Forwarded-Proto is set when absent; trace headers
// (traceparent, B3) pass unchanged. Bodies stream both ways; a response of unknown length is
// flushed after every write. 101 Switching Protocols joins the two connections (websockets).
// A revision whose port is named "h2c" is spoken to in HTTP/2 cleartext; Handler accepts
// h2c from clients, so gRPC works end to end. A request whose connection to a replica was
// refused before any byte was sent is tried on another ready replica, or waits for one.
//
// # Observations
//
// Collect returns per revision the completed one-second buckets of the injected clock: the
// time-weighted average of requests inside the gateway (held ones included) and the number
// that arrived; kubelet probes (K-Kubelet-Probe, User-Agent kube-probe/) are not counted.
// With a Registerer, revision_request_count, revision_request_latencies (ms),
// revision_queue_depth and activator_request_count carry Knative's labels; probes (kubelet's
// and K-Network-Probe) are left out of them. A RequestLogger writes one line per request from
// Knative's request-log template fields, for probes only with LogProbeRequests(true)
// (logging.enable-probe-request-log).
package gateway
