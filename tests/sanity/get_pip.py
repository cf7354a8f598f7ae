"""Stand-in for the get-pip.py bootstrap script that ansible-test downloads.

ansible-test creates each sanity test's virtualenv without pip, then runs the script it cached
as ~/.ansible/test/cache/get_pip_<version>.py with pip's install options and the packages to
bootstrap (pip==<version>, and on older releases setuptools and wheel), downloading the script
first when that file is missing. run.sh puts this file there under that name: it installs the
pip that ships with Python (ensurepip), then lets that pip install the requested packages from
the package index, so nothing is fetched from anywhere but the index.
"""

import subprocess
import sys

# Options of get-pip.py itself, which pip install does not know.
GET_PIP_OPTIONS = ("--no-setuptools", "--no-wheel")


def main():
    """Bootstrap pip, then install what ansible-test asked for."""
    # In a child: ensurepip clears the PIP_* variables and sets PIP_CONFIG_FILE to os.devnull in
    # the environment of its process, which would leave pip below without its configuration
    # (an index, a certificate bundle).
    subprocess.check_call([sys.executable, "-m", "ensurepip"])
    args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_OPTIONS]
    subprocess.check_call([sys.executable, "-m", "pip", "install"] + args)


if __name__ == "__main__":
    main()
