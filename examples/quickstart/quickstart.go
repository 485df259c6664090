// Package quickstart embeds the manifests `infera up` runs when given no -f.
package quickstart

import _ "embed"

// Manifest is llm.yaml: a Service `llm` running `infera model-server`.
//
//go:embed llm.yaml
var Manifest []byte

// StateDirVar is replaced by the state directory before the quickstart is applied.
const StateDirVar = "${INFERA_STATE_DIR}"

// ModelDir is where the quickstart model lives under the state directory.
const ModelDir = "models/llm"
