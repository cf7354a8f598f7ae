#!/usr/bin/python3
# The test bed's $SNAP/scripts/wrappers/refresh_certs.py: `microk8s refresh-certs` as
# canonical/microk8s:scripts/wrappers/refresh_certs.py@d099c907 has it, in the same order, with
# the same messages and exit codes, for the node's python3 alone (3.9 on Debian 11): click and
# dateutil are not there, so a small parser stands in for click's and strptime for dateutil's
# parse. exit_if_no_root is scripts/wrappers/common/utils.py@d099c907 l.201-209. Deviations,
# each where it is: the CA is not regenerated or replaced (ca.crt, CA_DIR), cluster-agent is
# not restarted, restart() of everything stops and starts the snap's services with `snap`.
import datetime
import os
import subprocess
import sys

snapdata_path = os.environ.get("SNAP_DATA")
snap_path = os.environ.get("SNAP")
backup_dir = "{}/certs-backup/".format(snapdata_path)

certs = {
    "ca.crt": "CA",
    "server.crt": "server",
    "front-proxy-client.crt": "front proxy client",
}

NO_CA = (
    "The test bed's microk8s stand-in does not regenerate or replace the CA: every node "
    "shares the test bed's CA (copied at join, as in a microk8s HA cluster). Refresh "
    "server.crt or front-proxy-client.crt."
)


def echo(msg=""):
    print(msg, flush=True)


def exit_if_no_root():
    """
    Exit if the user is not root
    """
    if not os.geteuid() == 0:
        echo(
            "Elevated permissions is needed for this operation. Please run this command with sudo."
        )
        exit(50)


def parse_enddate(text):
    """dateutil's parse of `notAfter=Jun 30 11:56:15 2027 GMT`, for that one format."""
    date = datetime.datetime.strptime(text.strip(), "%b %d %H:%M:%S %Y %Z")
    return date.replace(tzinfo=datetime.timezone.utc)


def check_certificate():
    """
    Print the days until the current certificate expires
    """
    try:
        for file in certs.keys():
            cmd = "{}/openssl.wrapper x509 -enddate -noout -in {}/certs/{}".format(
                snap_path, snapdata_path, file
            )
            cert_expire = subprocess.check_output(cmd.split())
            cert_expire_date = cert_expire.decode().split("=")
            date = parse_enddate(cert_expire_date[1])
            diff = date - datetime.datetime.now(datetime.timezone.utc)
            echo("The {} certificate will expire in {} days.".format(certs[file], diff.days))
    except subprocess.CalledProcessError as e:
        echo("Failed to get certificate info. {}".format(e))
        exit(4)


def undo_refresh():
    """
    Revert last certificate operation
    """
    if not os.path.exists(backup_dir):
        echo("No previous backup found")
        exit(1)

    try:
        subprocess.check_call("cp -r {}/certs {}/".format(backup_dir, snapdata_path).split())
        subprocess.check_call("cp -r {}/credentials {}".format(backup_dir, snapdata_path).split())
    except subprocess.CalledProcessError:
        echo("Failed to recover certificates")
        exit(4)

    restart()


def restart(service="all"):
    """Restart microk8s services"""
    if service == "all":
        echo("Restarting, please wait.")
        # Upstream runs $SNAP/microk8s-stop.wrapper and $SNAP/microk8s-start.wrapper, which stop
        # and start every service of the snap (snap stop|start microk8s --disable|--enable, and
        # stopped.lock); the test bed has no such wrappers: snap stop and start of the snap.
        try:
            subprocess.check_call("snap stop microk8s".split())
        except subprocess.CalledProcessError:
            pass

        try:
            subprocess.check_call("snap start microk8s".split())
        except subprocess.CalledProcessError:
            echo("Failed to start MicroK8s after reverting the certificates")
            exit(4)
    elif service == "cluster-agent":
        # The test bed runs no cluster-agent (it has no snap.microk8s.daemon-cluster-agent
        # unit): upstream's restart of it would fail and exit 4 after every refresh, so it is
        # left out.
        return
    else:
        echo("Restarting service {}.".format(service))
        try:
            subprocess.check_call("snapctl restart microk8s.daemon-{}".format(service).split())
        except subprocess.CalledProcessError:
            echo("Failed to restart service microk8s.daemon-{}.".format(service))
            exit(4)


def take_backup():
    """
    Backup the current certificates and credentials
    """
    try:
        subprocess.check_call("mkdir -p {}".format(backup_dir).split())
        subprocess.check_call("cp -r {}/certs {}".format(snapdata_path, backup_dir).split())
        subprocess.check_call("cp -r {}/credentials {}".format(snapdata_path, backup_dir).split())
    except subprocess.CalledProcessError as e:
        echo("Failed to backup the current CA. {}".format(e))
        exit(10)


def reproduce_front_proxy_client_cert():
    """
    Produce the front proxy client certificate
    """
    subprocess.check_call("rm -rf {}/certs/front-proxy-client.crt".format(snapdata_path).split())
    subprocess.check_call(
        [
            "bash",
            "-c",
            ". {}/actions/common/utils.sh; refresh_csr_conf; gen_proxy_client_cert".format(
                snap_path
            ),
        ]
    )
    subprocess.check_call("rm -rf .slr".split())
    restart("kubelite")


def reproduce_server_cert():
    """
    Produce the server certificate
    """
    subprocess.check_call("rm -rf {}/certs/server.crt".format(snapdata_path).split())
    subprocess.check_call(
        [
            "bash",
            "-c",
            ". {}/actions/common/utils.sh; refresh_csr_conf; gen_server_cert".format(snap_path),
        ]
    )
    subprocess.check_call("rm -rf .slr".split())
    restart("kubelite")
    restart("cluster-agent")


def refresh_cert(cert):
    """
    Refresh the selected certificate with an autogenerated CA
    """
    if cert == "ca.crt":
        # Upstream: reproduce_all_root_ca_certs, a new CA and every certificate from it.
        echo(NO_CA)
        exit(1)
    echo("Taking a backup of the current certificates under {}".format(backup_dir))
    take_backup()
    try:
        echo("Creating new certificates")
        if cert == "server.crt":
            reproduce_server_cert()
        elif cert == "front-proxy-client.crt":
            reproduce_front_proxy_client_cert()
        else:
            # this should never happen
            echo("Unknown certificate to refresh")
    except subprocess.CalledProcessError:
        echo("Failed to produce new certificates. Reverting.")
        undo_refresh()
        exit(20)


def usage_error(msg):
    """click's answer to a bad command line: usage, the error, exit 2."""
    prog = os.path.basename(sys.argv[0])
    print("Usage: {} [OPTIONS] [CA_DIR]".format(prog), file=sys.stderr)
    print("Try '{} --help' for help.".format(prog), file=sys.stderr)
    print("", file=sys.stderr)
    print("Error: {}".format(msg), file=sys.stderr)
    exit(2)


def parse_args(argv):
    """The command line as click parses refresh-certs' options: (ca_dir, undo, check, cert,
    help)."""
    ca_dir, undo, check, cert, help = None, False, False, None, False
    flags = {"-u": "undo", "--undo": "undo", "-c": "check", "--check": "check",
             "-h": "help", "--help": "help"}
    args = list(argv)
    while args:
        arg = args.pop(0)
        value = None
        if arg.startswith("--cert="):
            arg, value = "--cert", arg.split("=", 1)[1]
        elif arg.startswith("-e") and len(arg) > 2:
            arg, value = "-e", arg[2:]
        if arg in flags:
            name = flags[arg]
            undo, check, help = (undo or name == "undo", check or name == "check",
                                 help or name == "help")
        elif arg in ("-e", "--cert"):
            if value is None:
                if not args:
                    usage_error("Option '{}' requires an argument.".format(arg))
                value = args.pop(0)
            if value not in certs:
                choices = ", ".join("'{}'".format(c) for c in certs)
                usage_error("Invalid value for '-e' / '--cert': '{}' is not one of {}.".format(
                    value, choices))
            cert = value
        elif arg.startswith("-") and arg != "-":
            usage_error("No such option: {}".format(arg))
        elif ca_dir is None:
            if not os.path.exists(arg):
                usage_error("Invalid value for '[CA_DIR]': Path '{}' does not exist.".format(arg))
            ca_dir = arg
        else:
            usage_error("Got unexpected extra argument ({})".format(arg))
    return ca_dir, undo, check, cert, help


def refresh_certs(ca_dir, undo, check, cert, help):
    if help:
        show_help()
        exit(0)

    if ca_dir is not None and (undo or check or cert):
        echo("Please do not set any options in combination with the CA_DIR.")
        exit(1)

    operations_selected = 0
    for op in [undo, check, cert]:
        if op:
            operations_selected += 1
    if operations_selected > 1:
        echo("Please select only one of the options -c, -u or -e.")
        exit(2)

    # Operations here will need root privileges as some of the credentials
    # and certificates are used by system services.
    exit_if_no_root()
    if check:
        check_certificate()
        exit(0)

    if undo:
        undo_refresh()
        exit(0)

    if not ca_dir:
        if not cert:
            echo("Please use the '--cert' flag to select the certificate you need refreshed.")
            echo("")
            echo("Available certificate options:")
            echo("'server.crt': refreshes the server certificate")
            echo("'front-proxy-client.crt': refreshes the front proxy client certificate")
            echo("'ca.crt': refreshes the root CA and all certificates created from it.")
            echo(
                "            Warning: refreshing the root CA requires nodes to leave and re-join the cluster"
            )
            exit(3)
        else:
            refresh_cert(cert)
    else:
        # Upstream: install_ca(ca_dir), the CA in CA_DIR replaces the node's.
        echo(NO_CA)
        exit(1)


def show_help():
    msg = """Usage: microk8s refresh-certs [OPTIONS] [CA_DIR]

  Replace the CA certificates with the ca.crt and ca.key found in CA_DIR.
  Omit the CA_DIR argument and use the '--cert' flag to auto-generate a new CA
  or any other certificate.

Options:
  -c, --check  Check the expiration time of the installed certificates
  -e, --cert   The certificate to be autogenerated, must be one of {}
  -u, --undo   Revert the last refresh performed
  -h, --help       Show this message and exit."""
    echo(msg.format(list(certs.keys())))


if __name__ == "__main__":
    refresh_certs(*parse_args(sys.argv[1:]))
