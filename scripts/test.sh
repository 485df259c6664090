#!/usr/bin/env bash
# Runs every test of infera, on a fresh machine: installs what the tests need, then vet, the
# race-enabled test suite and a fuzz run of the manifest decoder. Fails loudly; skips nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export PATH="$PWD/bin:$PATH"   # project-local tools (go install GOBIN=$PWD/bin ...)

need_go="1.26"
have_go="$(go env GOVERSION 2>/dev/null | sed 's/^go//')"
case "$have_go" in
  "$need_go"*) ;;
  *) echo "test.sh: Go $need_go is required, found '${have_go:-none}'" >&2; exit 1 ;;
esac

# Debian packages the tests use: bubblewrap gives replicas their private mount namespace; docker.io is the engine (and
# CLI) the container tests run images on, wanted only when no dockerd is installed (Docker's own packages do as well).
# Root installs them; anyone else is told what is missing instead of having tests skip.
apt_packages=(bubblewrap)
missing=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
{ command -v dockerd && command -v docker; } >/dev/null 2>&1 || missing+=(docker.io)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" </dev/null
  else
    echo "test.sh: missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

# The container tests need a Docker engine answering where DOCKER_HOST says (the default socket when unset). When none
# does, start dockerd (root only) with its log in a temporary file, and at exit stop that one dockerd and nothing else.
dockerd_pid=""
stop_dockerd() {
  [ -n "$dockerd_pid" ] || return 0
  echo "== stopping the dockerd test.sh started (pid $dockerd_pid)"
  kill -TERM "$dockerd_pid" 2>/dev/null || true
  wait "$dockerd_pid" 2>/dev/null || true
  dockerd_pid=""
}
if ! docker version >/dev/null 2>&1; then
  docker_host="${DOCKER_HOST:-unix:///var/run/docker.sock}"
  case "$docker_host" in
    unix://*) ;;
    *) echo "test.sh: no Docker engine answers at DOCKER_HOST=$docker_host; start it, or unset DOCKER_HOST to have test.sh start dockerd" >&2
       exit 1 ;;
  esac
  if [ "$(id -u)" != 0 ]; then
    echo "test.sh: no Docker engine answers at $docker_host, and starting dockerd needs root (run as root, or start dockerd yourself)" >&2
    exit 1
  fi
  dockerd_log="$(mktemp "${TMPDIR:-/tmp}/infera-dockerd.XXXXXX.log")"
  echo "== starting dockerd on $docker_host (log: $dockerd_log)"
  trap stop_dockerd EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  dockerd --host "$docker_host" >"$dockerd_log" 2>&1 </dev/null &
  dockerd_pid=$!
  export DOCKER_HOST="$docker_host"
  for _ in $(seq 120); do # 60 s
    if docker version >/dev/null 2>&1; then break; fi
    if ! kill -0 "$dockerd_pid" 2>/dev/null; then
      wait "$dockerd_pid" || true
      dockerd_pid=""
      echo "test.sh: dockerd exited before answering; its log ($dockerd_log) ends:" >&2
      tail -n 20 "$dockerd_log" >&2
      exit 1
    fi
    sleep 0.5
  done
  if ! docker version >/dev/null 2>&1; then
    echo "test.sh: dockerd did not answer at $docker_host within 60 s; its log ($dockerd_log) ends:" >&2
    tail -n 20 "$dockerd_log" >&2
    exit 1
  fi
fi

# Go-built tools the tests run as real servers, built once into a cache outside the clone (CI runs
# on a fresh clone of the same machine) and found by the tests on PATH:
#   versitygw: the S3 server on loopback the model-cache tests fetch from (posix backend).
tools="${INFERA_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/infera/tools}"
install_tool() { # name version package
  local dir="$tools/$1-$2"
  if [ ! -x "$dir/$1" ]; then
    echo "== building $1 $2 into $dir (once)"
    mkdir -p "$dir"
    GOBIN="$dir" GOFLAGS= go install "$3@$2" </dev/null
  fi
  export PATH="$dir:$PATH"
}
install_tool versitygw v1.8.0 github.com/versity/versitygw/cmd/versitygw

echo "== go vet"
go vet ./...
unformatted="$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"
if [ -n "$unformatted" ]; then echo "gofmt would change: $unformatted" >&2; exit 1; fi

echo "== go test -race"
go test -race -count=1 -timeout 20m ./...

# Minimizing each new input for up to 5 s (default 60 s) leaves the minute to exploring.
echo "== fuzz: manifest decoder (60s)"
go test -run '^$' -fuzz '^FuzzLoad$' -fuzztime 60s -fuzzminimizetime 5s ./internal/manifest
