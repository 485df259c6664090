// Package modelserver is infera's reference model server: what
// `infera model-server` runs, what the quickstart serves, and what the
// platform's tests and benchmarks drive. It speaks the APIs real inference
// servers speak (OpenAI's, like vLLM and Ollama, and KServe's v2 open
// inference protocol, like Triton) and loads and runs a model the way they
// do, but the model is synthetic, because nothing can be downloaded where
// infera is built and tested.
//
// # The synthetic model
//
// Init writes a model directory from a size and a seed, deterministically:
//
//	model.safetensors  real safetensors: an embedding [vocab, hidden], layers
//	                   [hidden, hidden] and an output projection [hidden, vocab],
//	                   all F32, together within 1% of the size asked for
//	config.json        Hugging Face style: shape, name, "synthetic": true, and
//	                   the size and sha256 of the weights
//	tokenizer.json     a Hugging Face WordLevel tokenizer of 512 tokens: three
//	                   special ones, punctuation and common English words
//
// The weights are pseudo-random numbers, not a trained model; Info.Note says
// so wherever a model is described. Files are written under temporary names
// and renamed, config.json last, so an interrupted Init leaves nothing that
// loads.
//
// # Real work
//
// Load reads the header first (one read), checks it strictly against the
// file's size and config.json, and only then reads the weights as the
// fastest loaders do: LoadOptions.Parallelism (DefaultLoadParallelism) large
// reads in flight at once, handed out front to back, into anonymous memory
// (on Linux in huge pages, and read-only once loaded), each chunk checked
// for non-finite values as it lands, so load time grows with size. A page
// fault through a mapping fetches a small piece at a time, reported 30 to 50
// times slower over FUSE and network mounts; LoadOptions.Mmap still maps the
// file instead, for replicas of a model on one machine to share the page
// cache's copy. Model.LoadStats (in the log and in /v2/models/{m}'s parameters) says
// bytes, seconds and MB/s; BenchmarkLoad measures them against a plain
// sequential read of the same files. Config.Verify also hashes the file.
// Every generated token then does what a decoding step of an LLM does: a
// matrix-vector product through every layer and the output
// projection, reading every weight once; a large layer's rows are split
// among the CPUs. Decoding is memory-bound, and latency per token grows
// with the model's size. The next token is sampled
// from the logits plus a bias, with the prompt's hash as the seed
// (Gumbel-max), so different prompts give different (meaningless) text, and
// the same prompt the same text, on every server of the model.
//
// # Serving
//
// Run serves one model on one address, under every name in Config.Names
// (the first the primary), or by default under Config.Service ($K_SERVICE,
// the name the gateway routes "model" by) and config.json's name:
//
//	GET  /health                          200 once loaded; 503 loading or draining
//	GET  /v1/models, /v1/models/{m}       OpenAI model list and model
//	POST /v1/completions                  OpenAI completions, stream or not
//	POST /v1/chat/completions             OpenAI chat completions, stream or not
//	GET  /v2, /v2/health/live, /v2/health/ready
//	GET  /v2/models/{m}[/versions/1][/ready]   metadata with the load's figures in "parameters"
//	POST /v2/models/{m}[/versions/1]/infer   KServe v2 (see kserve.go for the tensors)
//
// Config.Parallelism requests generate at once; the rest wait in a FIFO
// queue, leaving it if their client goes away. A streamed response flushes
// one server-sent event per token and generation stops when the client
// disconnects. A prompt and its completion fit in a context window of 4096
// tokens (max_model_len), checked as vLLM checks it.
//
// The server listens before it loads, so that /health can say it is
// loading: a platform must probe /health (or /v2/health/ready), not the TCP
// port, to know when it is ready.
//
// # Lifecycle
//
//	        listen           model loaded            ctx done             in flight done
//	start ─────────▶ loading ─────────────▶ ready ──────────▶ draining ─────────────────▶ stopped
//	                 /health 503            200               503; no new connections;
//	                                                          requests in flight and queued
//	                                                          finish (cut off after DrainTimeout)
//
// Draining is the user container's part of Knative's shutdown: Knative (and
// infera's supervisor) stops routing to a replica and waits for it to drain
// before the container gets SIGTERM, so the server stops accepting at once,
// answers not ready on connections still open, finishes what is in flight,
// then stops. The weights are released only once no request uses them.
package modelserver
