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

# Debian packages the tests use: bubblewrap gives replicas their private mount namespace. Root installs them; anyone else
# is told what is missing instead of having tests skip.
apt_packages=(bubblewrap)
missing=()
for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" </dev/null
  else
    echo "test.sh: missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
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
