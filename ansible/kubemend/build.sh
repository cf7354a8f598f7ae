#!/usr/bin/env bash
# Puts a built kubemend binary into this collection as its modules: one regular file per module
# of the action group in meta/runtime.yml, plugins/modules/<module>, all hard links of one copy.
# The binary dispatches on the name it is run under (AnsiballZ_<module>).
#
# Why hard links: ansible-core lists a symlinked plugin as an alias of its target and leaves it
# out (ansible-doc -l, -F), so each module must be a real file; and `ansible-galaxy collection
# build` packs the second and later names of a hard-linked file as tar hard links, so the
# tarball holds the binary once (three copies would triple it: gzip cannot share data between
# members that far apart). `ansible-galaxy collection install` writes each module as a file of
# its own. There is no bin/ directory: ansible-test reads files under bin/ as Python scripts.
#
#   build.sh [--binary PATH] [--link] [--into DIR] [--tarball DIR]
#
#   --binary PATH  the binary to use (default: the static release binary of this repository,
#                  target/x86_64-unknown-linux-musl/dist/kubemend under CARGO_TARGET_DIR if
#                  set, which `make release` builds)
#   --link         hard-link the modules to the binary itself instead of copying it (a copy when
#                  they are on different file systems; saves a copy in test builds)
#   --into DIR     leave this tree alone: copy the collection to
#                  DIR/ansible_collections/kubemend/microk8s and put the binary there (use
#                  DIR as ANSIBLE_COLLECTIONS_PATH); without it the binary goes into this tree,
#                  where .gitignore keeps it out of git
#   --tarball DIR  then run `ansible-galaxy collection build` into DIR (the venv's, if present)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
binary="${CARGO_TARGET_DIR:-$root/target}/x86_64-unknown-linux-musl/dist/kubemend"
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
  echo "build.sh: no kubemend binary at $binary; build it first (make release)" >&2
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

# Builds of earlier versions put the binary in bin/.
rm -f "$dest/bin/kubemend"
rmdir "$dest/bin" 2>/dev/null || true
mkdir -p "$dest/plugins/modules"
first=""
for module in $modules; do
  rm -f "$dest/plugins/modules/$module"
  if [ -z "$first" ]; then
    first="$dest/plugins/modules/$module"
    if ! { $link && ln -L "$binary" "$first" 2>/dev/null; }; then
      install -m 0755 "$binary" "$first"
    fi
  else
    ln "$first" "$dest/plugins/modules/$module"
  fi
done
echo "build.sh: $(printf '%s\n' "$modules" | paste -sd, -) -> $dest/plugins/modules"

if [ -n "$tarball" ]; then
  galaxy="ansible-galaxy"
  if [ -x "$root/.venv/bin/ansible-galaxy" ]; then
    galaxy="$root/.venv/bin/ansible-galaxy"
  fi
  mkdir -p "$tarball"
  tarball="$(cd "$tarball" && pwd)"
  (cd "$dest" && "$galaxy" collection build --force --output-path "$tarball" .)
fi
