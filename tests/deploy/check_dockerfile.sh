#!/usr/bin/env bash
# Static checks of deploy/docker/Dockerfile, standing in for hadolint (not packaged in
# Debian 12; it also runs when found on PATH). Building the image needs a Docker daemon and a
# registry, which CI does not have, so these checks hold the invariants the image relies on:
#
#   - every stage is Debian 12 (debian:12, debian:12-slim or bookworm; ARG defaults resolved)
#     and no image is pinned to :latest;
#   - two stages: `build`, which runs the project's own `scripts/bootstrap.sh build`, and the
#     final runtime stage, which copies nothing from the context except by --from=build, runs
#     no bootstrap.sh and installs no -dev package, compiler or cmake;
#   - every `apt-get install` has -y and --no-install-recommends and shares its RUN with an
#     `apt-get update` before it and an `rm -rf /var/lib/apt/lists/*` after it;
#   - no ADD (COPY says what it does), no sudo;
#   - the final stage copies the epochal binary from the build stage, runs as a non-root
#     USER, and its ENTRYPOINT/CMD are in exec (JSON) form.
#
# usage: check_dockerfile.sh [DOCKERFILE]   (default: deploy/docker/Dockerfile beside this repo)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dockerfile="${1:-$here/deploy/docker/Dockerfile}"
[ -f "$dockerfile" ] || { echo "FAIL: no $dockerfile" >&2; exit 1; }

failures=0
bad() {
  echo "FAIL: $dockerfile: $*" >&2
  failures=$((failures + 1))
}

# One instruction per line: comments dropped, continuation lines joined.
instructions="$(sed -e '/^[[:space:]]*#/d' "$dockerfile" |
  awk '{ if (sub(/\\[[:space:]]*$/, "")) { buf = buf $0 " "; next } print buf $0; buf = "" }' |
  sed -e 's/[[:space:]]\+/ /g' -e 's/^ //' -e '/^$/d')"

# ARG defaults (global ones, before the first FROM, are what FROM lines see).
declare -A args=()
while read -r name value; do
  args["$name"]="$value"
done < <(grep -E '^ARG [A-Za-z_]+=' <<<"$instructions" | sed -E 's/^ARG ([A-Za-z_]+)=(.*)$/\1 \2/')
resolve() {
  local text="$1" name
  for name in "${!args[@]}"; do
    text="${text//\$\{$name\}/${args[$name]}}"
    text="${text//\$$name/${args[$name]}}"
  done
  echo "$text"
}

stages=0
stage_names=()
current=""
declare -A stage_text=()
while IFS= read -r line; do
  keyword="${line%% *}"
  keyword="${keyword^^}"
  if [ "$keyword" = FROM ]; then
    stages=$((stages + 1))
    read -r _ image rest <<<"$line"
    image="$(resolve "$image")"
    current="stage$stages"
    if [[ "$rest" =~ [Aa][Ss]\ ([A-Za-z0-9_-]+) ]]; then current="${BASH_REMATCH[1]}"; fi
    stage_names+=("$current")
    case "$image" in
      debian:12 | debian:12-slim | debian:bookworm | debian:bookworm-slim | debian:12.* | debian:bookworm-2*) ;;
      *) bad "stage $current is FROM '$image', not Debian 12" ;;
    esac
  fi
  [ -n "$current" ] && stage_text["$current"]+="$line"$'\n'
  case "$keyword" in
    ADD) bad "ADD found ('$line'); use COPY" ;;
  esac
  if grep -qE '(^| )sudo ' <<<"$line"; then bad "sudo in '$line'"; fi
  if grep -qE '^FROM .*:latest' <<<"$line"; then bad "image pinned to :latest in '$line'"; fi
  if [ "$keyword" = RUN ] && grep -q 'apt-get install' <<<"$line"; then
    grep -q -- '-y' <<<"$line" || bad "apt-get install without -y: '$line'"
    grep -q -- '--no-install-recommends' <<<"$line" || bad "apt-get install without --no-install-recommends: '$line'"
    grep -q 'rm -rf /var/lib/apt/lists' <<<"$line" || bad "RUN with apt-get install does not remove /var/lib/apt/lists: '$line'"
  fi
done <<<"$instructions"

[ "$stages" = 2 ] || bad "expected 2 stages (build, runtime), found $stages"
[ -n "${stage_text[build]:-}" ] || bad "no stage named 'build'"
grep -q 'bootstrap.sh build' <<<"${stage_text[build]:-}" ||
  bad "the build stage does not run scripts/bootstrap.sh build"

final="${stage_names[-1]:-}"
runtime="${stage_text[$final]:-}"
[ "$final" != build ] || bad "the final stage is the build stage"
if grep -qE '^COPY ' <<<"$runtime"; then
  while read -r copy; do
    grep -q -- '--from=build' <<<"$copy" || bad "runtime stage copies from the build context: '$copy'"
  done < <(grep -E '^COPY ' <<<"$runtime")
fi
grep -q 'bootstrap.sh' <<<"$runtime" && bad "the runtime stage runs bootstrap.sh"
while read -r install; do
  [ -n "$install" ] || continue
  if grep -qE '(^| )[a-z0-9.+-]+-dev( |$)|build-essential|(^| )cmake( |$)|(^| )g\+\+( |$)|(^| )gcc( |$)' <<<"$install"; then
    bad "the runtime stage installs build packages: '$install'"
  fi
  if ! grep -qE 'apt-get update.*apt-get install' <<<"$install"; then
    bad "runtime apt-get install without an apt-get update in the same RUN: '$install'"
  fi
done < <(grep -E '^RUN .*apt-get install' <<<"$runtime" || true)
grep -qE '^COPY --from=build .*/epochal /usr/local/bin/epochal' <<<"$runtime" ||
  bad "the runtime stage does not copy the epochal binary from the build stage"
user="$(grep -E '^USER ' <<<"$runtime" | tail -n 1 | cut -d' ' -f2)"
case "$user" in
  "" | root | 0 | 0:*) bad "the runtime stage runs as root (USER '${user:-unset}')" ;;
esac
while read -r exec_line; do
  [ -n "$exec_line" ] || continue
  grep -qE '^(ENTRYPOINT|CMD) \[' <<<"$exec_line" || bad "not in exec form: '$exec_line'"
done < <(grep -E '^(ENTRYPOINT|CMD) ' <<<"$runtime" || true)

if command -v hadolint >/dev/null; then
  hadolint "$dockerfile" || bad "hadolint reported problems"
else
  echo "note: hadolint not installed (not packaged in Debian 12); the checks above stand in for it"
fi

if [ "$failures" -gt 0 ]; then
  echo "$failures problem(s) in $dockerfile" >&2
  exit 1
fi
echo "PASS: $dockerfile ($stages stages: ${stage_names[*]})"
