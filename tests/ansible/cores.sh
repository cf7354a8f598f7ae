# Sourced, not run: one pinned virtualenv per ansible-core version, on a Python that version
# supports. tests/ansible/venv.sh makes those that tests/ansible.rs runs the collection under,
# tests/sanity/run.sh those of `ansible-test sanity`.
#
#   core_venv VERSION VENV REQUIREMENTS
#       makes VENV (or leaves it, when it was built from this very REQUIREMENTS on one of the
#       Pythons of VERSION and still imports ansible) with exactly what REQUIREMENTS pins
#   core_pythons VERSION    the Python minor versions of ansible-core VERSION, preferred first
#   find_python MINOR...    a working interpreter of one of these minor versions
#   python_minor PYTHON     its minor version, e.g. 3.11

# shellcheck shell=bash

core_pythons() {
  case "$1" in
    2.15 | 2.16) echo 3.11 ;;
    2.21) echo 3.13 3.12 ;;
    *) echo "cores.sh: no Python known for ansible-core $1" >&2; return 1 ;;
  esac
}

# On PATH, or installed by pyenv (whose shims on PATH fail for versions that are not selected).
find_python() {
  local minor candidate pyenv_root
  pyenv_root="$(pyenv root 2>/dev/null || echo "${HOME:-/root}/.pyenv")"
  for minor in "$@"; do
    for candidate in "python$minor" "$pyenv_root"/versions/"$minor".*/bin/"python$minor"; do
      if command -v "$candidate" >/dev/null 2>&1 \
        && "$candidate" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        command -v "$candidate"
        return 0
      fi
    done
  done
  return 1
}

python_minor() {
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'
}

core_venv() {
  local version="$1" venv="$2" requirements="$3" minors python minor
  if [ ! -f "$requirements" ]; then
    echo "cores.sh: no $requirements" >&2
    return 2
  fi
  minors="$(core_pythons "$version")" || return 1
  # shellcheck disable=SC2086 # one word per minor version
  if ! python="$(find_python $minors)"; then
    echo "cores.sh: ansible-core $version needs Python $minors, none found" >&2
    return 1
  fi
  minor="$(python_minor "$python")"
  if [ -x "$venv/bin/python" ] && cmp -s "$venv/.kubemend-requirements" "$requirements" \
    && [ "$(python_minor "$venv/bin/python")" = "$minor" ] \
    && "$venv/bin/python" -c 'import ansible' 2>/dev/null; then
    return 0
  fi
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/.kubemend-requirements"
}
