#!/usr/bin/env bash
# Lints the collection with the venv's ansible-lint (tests/ansible/venv.sh creates it), on a copy
# built into a temporary directory, so that the modules, the role and the action group resolve
# as they do when the collection is installed. The checkout is left untouched.
#
#   lint.sh [--binary PATH] [ANSIBLE-LINT ARGS...]
#
#   --binary PATH  the kubemend binary to build the copy with (default: target/debug/kubemend,
#                  else target/release/kubemend, under CARGO_TARGET_DIR if set)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
lint="$root/.venv/bin/ansible-lint"
binary=""
if [ "${1:-}" = "--binary" ]; then
  binary="${2:?--binary needs a path}"
  shift 2
else
  target="${CARGO_TARGET_DIR:-$root/target}"
  for candidate in "$target/debug/kubemend" "$target/release/kubemend"; do
    if [ -f "$candidate" ]; then
      binary="$candidate"
      break
    fi
  done
fi
if [ ! -x "$lint" ]; then
  echo "lint.sh: $lint is missing; run tests/ansible/venv.sh first" >&2
  exit 1
fi
if [ -z "$binary" ]; then
  echo "lint.sh: no kubemend binary; run cargo build first or pass --binary PATH" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$here/build.sh" --binary "$binary" --link --into "$work/collections" >/dev/null
cd "$work/collections/ansible_collections/kubemend/microk8s"
# HOME in the scratch directory: ansible-lint and ansible-playbook keep caches under ~/.ansible.
HOME="$work/home" PATH="$root/.venv/bin:$PATH" ANSIBLE_COLLECTIONS_PATH="$work/collections" \
  "$lint" --nocolor "$@"
