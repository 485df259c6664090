// Package coldstart assembles the phases of revisions' cold starts from the times that each
// mechanism reports on its own injected clock, and records each finished cold start three ways:
// as the revision's last one (Last, which the admin API shows), in the Prometheus histogram
// infera_cold_start_seconds{phase} with Knative's revision labels, and as one debug log line.
//
// # Phases
//
// A cold start is a timeline of up to six instants; each phase is the time between two of
// them, so the phases of one cold start add up to its Total:
//
//	Pending on a     poke, or the     replica          process          first            held request's
//	Dataset          start decision   created          running          Ready            first byte
//	   |--- dataset ---|-- placement ---|-- process_start -|--- readiness ---|-- first_byte ---|
//
// dataset is there only when the revision had to wait for a Dataset before its first start;
// first_byte only when a request was held for the cold start. A phase whose end was reported
// before its start (clocks of two reporters, a report that came late) counts as zero, and the
// next one starts where the timeline has got to, never earlier.
//
// # Who reports what
//
//   - the controller's scaling loop: a revision added with its first decision and, when it
//     waited, when it went Pending on a Dataset (Added); each request found waiting for a
//     revision with no ready replica, the gateway's OnDemand poke with the request's arrival
//     (Demand); and every later decision, of which only scaling to zero matters (Decided);
//   - the supervisor: a replica's Created, Started and ReadySince, whenever its process starts
//     or its readiness changes, before its endpoint reaches the gateway (Replica);
//   - the gateway: a held request's first response byte from its replica (FirstByte).
//
// Reporters call from their own goroutines; every method is safe for concurrent use, returns
// at once, and is a no-op on a nil *Tracker.
//
// # What counts as a cold start
//
// One begins when a request waits for a revision with no ready replica (trigger "request": a
// scale from zero), or when a revision that has not run yet is started with replicas wanted
// (trigger "first-start"; a request held while it starts makes it end at that request's first
// byte too). It is the start of the first replica of the revision that becomes Ready having
// been created since it began; a replica that was there already becoming Ready (back from
// NotReady, out of a crash loop) ends the wait with no record, since no replica was started for
// it. It is finished at that Ready when no request was held, else at a held request's first
// byte. A decision to scale to zero drops one whose replica never became Ready and finishes one
// still waiting for a first byte (the held requests ended without a response); so does a new
// request's poke after the revision's replicas went away.
package coldstart
