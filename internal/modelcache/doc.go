// Package modelcache keeps Fluid Datasets' files in a local tiered cache and serves them to
// replicas: sources (S3/OSS through minio-go, HTTP(S), local and NAS paths), a fetcher that
// downloads with parallel ranged GETs into preallocated files, verifies each file and makes it
// visible only when complete (atomic rename), and resumes after a crash re-fetching at most the
// ranges that were in flight; the tiered store (Fluid's tieredstore levels MEM/SSD/HDD with quota
// and high/low watermarks, least-recently-used eviction that never touches what a replica has
// mounted or what is being fetched) and its index, which survives restarts.
//
// The Manager (manager.go) owns the datasets' lifecycle. The controller gives it the desired
// Datasets with Set (each with its runtime's tieredstore and fuse clean policy, and its
// encryptOptions resolved) and the DataLoads with SetDataLoads; Run fetches, evicts and runs
// the loads until its context ends. A dataset goes
//
//	Pending ──placed in a level──▶ Fetching ──every file──▶ Ready ──evicted──▶ Pending
//	   │                              │
//	   └─too large: Failed            └─error: Failed, retried after a back-off
//
// and OnChange tells the controller each change, so a revision waiting for its dataset starts
// once Path returns a directory. Replicas Pin what they mount; a pinned dataset, like one being
// fetched, is never evicted. Placement, watermarks and the Fluid semantics they keep are in
// cache.go, the eviction policy itself in package eviction (pure: it decides, the Manager
// deletes), the index in index.go, DataLoads in dataload.go, statuses in status.go.
//
// Where FUSE works (Manager.Lazy), LazyPath serves a dataset before it is Ready, as Fluid's
// FUSE does: a read-only lazy mount (package lazymount) of the dataset's listed tree, whose
// reads come from the cache, from memory for safetensors headers (fetched first), or from a
// file's partial download once its range is in, asked for ahead of the queue (lazy.go).
package modelcache
