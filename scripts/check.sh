#!/usr/bin/env bash
# The project's checks, the README's test command: what the tests need
# (scripts/deps.sh: installed as root, listed otherwise), formatting, go.mod
# and go.sum as go mod tidy leaves them, vet, the tests under the race
# detector, and staticcheck where it is installed. CI (.ci/run) runs this.
# --deps-only stops after what the tests need.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v go >/dev/null || { echo "scripts/check.sh: no go on the PATH: Go 1.26 or later is needed (README, Set-up)" >&2; exit 1; }
# The tests run tools from /usr/sbin (sshd, dockerd, useradd), also for a
# user whose PATH lacks it; scripts/deps.sh looks for them there too.
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
deps=0
scripts/deps.sh </dev/null || deps=$?
case $deps in
  # Everything is here: a test that finds something missing fails.
  0) export TAKEOVER_TESTS_REQUIRE_ALL=1 ;;
  # Something is missing: its tests skip, unless told that nothing may be
  # (CI sets TAKEOVER_TESTS_REQUIRE_ALL=1).
  3) if [ "${TAKEOVER_TESTS_REQUIRE_ALL-}" = 1 ]; then
       echo "scripts/check.sh: TAKEOVER_TESTS_REQUIRE_ALL=1, and what is listed above is missing" >&2
       exit 1
     fi ;;
  *) exit $deps ;;
esac
if [ "${1-}" = --deps-only ]; then
  echo "scripts/check.sh: TAKEOVER_TESTS_REQUIRE_ALL=${TAKEOVER_TESTS_REQUIRE_ALL-}"
  exit 0
fi

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
go test -race -count=1 -timeout 45m ./...
if command -v staticcheck >/dev/null 2>&1; then
  staticcheck ./...
fi
