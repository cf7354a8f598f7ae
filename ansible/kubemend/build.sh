#!/usr/bin/env bash
# Puts a built kubemend binary into this collection as its modules: bin/kubemend, and one symlink
# plugins/modules/<module> -> ../../bin/kubemend per module of the action group in
# meta/runtime.yml. The binary dispatches on the name it is run under (AnsiballZ_<module>).
#
#   build.sh [--binary PATH] [--link] [--into DIR] [--tarball DIR]
#
#   --binary PATH  the binary to use (default: target/release/kubemend of this repository;
#                  build it with `cargo build --release`, statically linked for the EE/host:
#                  `--target x86_64-unknown-linux-musl`)
#   --link         symlink bin/kubemend to the binary instead of copying it (ansible copies
#                  the module file it finds on each run anyway; saves a copy in test builds)
#   --into DIR     leave this tree alone: copy the collection to
#                  DIR/ansible_collections/kubemend/microk8s and put the binary there (use
#                  DIR as ANSIBLE_COLLECTIONS_PATH); without it the binary goes into this tree,
#                  where .gitignore keeps it out of git
#   --tarball DIR  then run `ansible-galaxy collection build` into DIR (the venv's, if present)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
binary="$root/target/release/kubemend"
into=""
tarball=""
link=false

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    --link) link=true; shift ;;
    --into) into="${2:?--into needs a directory}"; shift 2 ;;
    --tarball) tarball="${2:?--tarball needs a directory}"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "build.sh: unknown argument $1" >&2; usage ;;
  esac
done

if [ ! -f "$binary" ]; then
  echo "build.sh: no kubemend binary at $binary; build it first (cargo build --release)" >&2
  exit 1
fi

# The modules are the members of the action group `kubemend` in meta/runtime.yml: one list.
modules="$(awk '
  /^action_groups:/ { groups = 1; next }
  groups && /^  kubemend:/ { members = 1; next }
  members && /^    - / { print $2; next }
  members && /^  [^ #]/ { exit }
  /^[^ #]/ { groups = 0 }
' "$here/meta/runtime.yml")"
if [ -z "$modules" ]; then
  echo "build.sh: found no modules in the kubemend action group of meta/runtime.yml" >&2
  exit 1
fi

dest="$here"
if [ -n "$into" ]; then
  mkdir -p "$into"
  dest="$(cd "$into" && pwd)/ansible_collections/kubemend/microk8s"
  rm -rf "$dest"
  mkdir -p "$dest"
  excludes=(--exclude=./bin --exclude='./*.tar.gz' --exclude=./tests/output)
  for module in $modules; do
    excludes+=("--exclude=./plugins/modules/$module")
  done
  tar -C "$here" "${excludes[@]}" -cf - . | tar -C "$dest" -xf -
fi

mkdir -p "$dest/bin" "$dest/plugins/modules"
if $link; then
  ln -sfn "$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")" "$dest/bin/kubemend"
else
  rm -f "$dest/bin/kubemend"
  install -m 0755 "$binary" "$dest/bin/kubemend"
fi
for module in $modules; do
  ln -sfn ../../bin/kubemend "$dest/plugins/modules/$module"
done
echo "build.sh: $(echo $modules | tr ' ' ',') -> $dest/plugins/modules"

if [ -n "$tarball" ]; then
  galaxy="ansible-galaxy"
  if [ -x "$root/.venv/bin/ansible-galaxy" ]; then
    galaxy="$root/.venv/bin/ansible-galaxy"
  fi
  mkdir -p "$tarball"
  (cd "$dest" && "$galaxy" collection build --force --output-path "$(cd "$tarball" && pwd)" .)
fi
