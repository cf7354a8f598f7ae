#!/usr/bin/env bash
# Runs `ansible-test sanity` on a built copy of the collection (ansible/kubemend/build.sh
# --into), with the oldest ansible-core kubemend supports (2.15, on Python 3.11) and the newest
# release (2.21, on Python 3.13 or 3.12), each from a venv with the versions pinned in
# requirements-<version>.txt. Everything it installs or caches stays under .venv-sanity/.
#
#   tests/sanity/run.sh [--binary PATH] [--version 2.15|2.21]... [ANSIBLE-TEST SANITY ARGS...]
#
#   --binary PATH   the kubemend binary to build the copy with (default: the debug build of
#                   this repository, under CARGO_TARGET_DIR if set)
#   --version V     run only these ansible-core versions (default: all of them)
#   other arguments go to `ansible-test sanity`, e.g. `--test validate-modules`
#
# The module files are the compiled binary, which no sanity test can read: validate-modules
# opens every file under plugins/modules as Python text and stops with UnicodeDecodeError. They
# are excluded by path (`--exclude`); their sidecar docs, plugins/modules/<module>.yml, are
# validated. Before ansible-core 2.18, action-plugin-docs looks for plugins/modules/<name>.py
# only and finds no module for the action of each module (plugins/action/<module>.py): the
# collection's tests/sanity/ignore-2.15.txt to ignore-2.17.txt say so for those files and that
# test, nothing else (from 2.18 on it reads the sidecar docs and needs no ignore).
#
# Then `ansible-doc` renders each module's docs (ansible-test's ansible-doc test reads .py
# plugins only), and a module result has `invocation` exactly when that core asks for it.
#
# ansible-test creates a virtualenv per sanity test and bootstraps pip into it with a
# get-pip.py that it downloads from a host of its own unless the file is already in its cache,
# ~/.ansible/test/cache/get_pip_<pip version>.py. Here HOME is .venv-sanity/home, and that
# file is get_pip.py of this directory, which uses ensurepip and then pip from the package
# index (see there).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
state="$root/.venv-sanity"
binary="${CARGO_TARGET_DIR:-$root/target}/debug/kubemend"
versions=()
sanity_args=()

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    --version) versions+=("${2:?--version needs 2.15 or 2.21}"); shift 2 ;;
    -h|--help) usage ;;
    *) sanity_args+=("$1"); shift ;;
  esac
done
[ ${#versions[@]} -gt 0 ] || versions=(2.15 2.21)

# core_venv, python_minor: one pinned venv per ansible-core version.
# shellcheck source-path=SCRIPTDIR/../ansible
source "$here/../ansible/cores.sh"

if [ ! -f "$binary" ]; then
  echo "run.sh: no kubemend binary at $binary; run cargo build first or pass --binary PATH" >&2
  exit 1
fi

# The modules: build.sh puts the binary there under each name of the action group.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$here/../../ansible/kubemend/build.sh" --binary "$binary" --link --into "$work" >/dev/null
collection="$work/ansible_collections/kubemend/microk8s"
excludes=()
fqcns=()
for module in "$collection"/plugins/modules/*; do
  case "$module" in
    *.yml|*.yaml) ;;
    *)
      excludes+=(--exclude "plugins/modules/$(basename "$module")")
      fqcns+=("kubemend.microk8s.$(basename "$module")")
      ;;
  esac
done

home="$state/home"
mkdir -p "$home/.ansible/test/cache"
failed=()
for version in "${versions[@]}"; do
  venv="$state/$version"
  core_venv "$version" "$venv" "$here/requirements-$version.txt"
  minor="$(python_minor "$venv/bin/python")"

  # The bootstrap script, under the name ansible-test looks for.
  pip_version="$("$venv/bin/python" -c '
import sys
from ansible_test._internal.python_requirements import get_venv_packages
class Python:
    version = sys.argv[1]
print(get_venv_packages(Python)["pip"])' "$minor")"
  cp "$here/get_pip.py" "$home/.ansible/test/cache/get_pip_${pip_version//./_}.py"

  echo "run.sh: ansible-test sanity, ansible-core $("$venv/bin/python" -c 'import ansible; print(ansible.__version__)') on Python $minor"
  rm -rf "$collection/tests/output"
  if ! (cd "$collection" && HOME="$home" PATH="$venv/bin:$PATH" \
    "$venv/bin/ansible-test" sanity --color no --python "$minor" "${excludes[@]}" \
    ${sanity_args[@]+"${sanity_args[@]}"}); then
    failed+=("$version")
  fi

  # ansible-test's ansible-doc test covers .py plugins only: render the modules' docs here.
  echo "run.sh: ansible-doc ${fqcns[*]}"
  if ! HOME="$home" ANSIBLE_COLLECTIONS_PATH="$work" ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false \
    "$venv/bin/ansible-doc" --json -t module "${fqcns[@]}" >"$work/docs.json" \
    || ! "$venv/bin/python" -c '
import json, sys
docs = json.load(open(sys.argv[1]))
missing = [name for name in sys.argv[2:] if not docs.get(name, {}).get("doc", {}).get("options")]
sys.exit("ansible-doc rendered no options for %s" % ", ".join(missing) if missing else 0)' \
      "$work/docs.json" "${fqcns[@]}"; then
    failed+=("$version (ansible-doc)")
  fi

  # invocation in a module result: always before ansible-core 2.21; from 2.21 on only with
  # INJECT_INVOCATION (off by default). A bad name fails before any cluster access; the run
  # with INJECT_INVOCATION=1 shows that the module was found and ran.
  before_2_21=false
  [ "$(printf '%s\n' "$version" 2.21 | sort -V | head -n 1)" = 2.21 ] || before_2_21=true
  for inject in 0 1; do
    if [ "$inject" = 1 ] || $before_2_21; then want=yes; else want=no; fi
    # The task fails on purpose: only its output counts.
    result="$(cd "$work"; HOME="$home" ANSIBLE_COLLECTIONS_PATH="$work" \
      ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false ANSIBLE_INJECT_INVOCATION="$inject" \
      "$venv/bin/ansible" localhost -c local -m kubemend.microk8s.calico_rbac \
      -a 'name="bad name"' -vvv 2>&1)" || true
    if grep -q '"invocation"' <<<"$result"; then got=yes; else got=no; fi
    if ! grep -q 'FAILED!' <<<"$result" || [ "$got" != "$want" ]; then
      echo "run.sh: INJECT_INVOCATION=$inject: invocation expected: $want, got: $got" >&2
      echo "$result" >&2
      failed+=("$version (invocation)")
    fi
  done
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "run.sh: failed for ansible-core ${failed[*]}" >&2
  exit 1
fi
echo "run.sh: ansible-test sanity, ansible-doc and invocation passed for ansible-core ${versions[*]}"
