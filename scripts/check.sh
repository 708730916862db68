#!/usr/bin/env bash
# The project's checks: formatting, go.mod and go.sum as go mod tidy leaves
# them, vet, the tests under the race detector, and staticcheck where it is
# installed. CI runs this, as README says.
set -euo pipefail
cd "$(dirname "$0")/.."

unformatted=$(gofmt -l . | grep -v '^testdata/' || true)
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" $unformatted >&2
  exit 1
fi
if ! go mod tidy -diff >/dev/null; then
  echo "go mod tidy would change go.mod or go.sum (run it, and commit what it changes):" >&2
  go mod tidy -diff >&2 || true
  exit 1
fi
go vet ./...
go test -race -count=1 -timeout 30m ./...
if command -v staticcheck >/dev/null 2>&1; then
  staticcheck ./...
fi
