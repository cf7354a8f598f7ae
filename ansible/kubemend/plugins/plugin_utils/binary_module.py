# -*- coding: utf-8 -*-
# Copyright: kubemend contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The action behind every kubemend.microk8s module: ansible-core's own, minus its shell calls.

ansible-core runs a binary module in five steps: a shell command makes a temporary directory, the
module and its arguments are copied in, a second shell command makes the module executable, a third
runs it, a fourth removes the directory. On a local connection (``connection: local``, where
kubemend's modules run: they talk to the Kubernetes API, not to the host) each shell command is a
fork and exec of ``/bin/sh`` by the worker, and together with copying the binary they cost more
than the module's own work. This action does the same steps in Python when the connection is
local and nothing is to be become: the directory is made with ``tempfile.mkdtemp`` under the same
``remote_tmp``, the module is hard-linked into it (copied when a link is not allowed), the mode is
set with ``os.chmod`` and the directory removed with ``shutil.rmtree``. The module still runs
through the connection, with the same arguments file, environment, check and diff mode, no_log
and result handling as ever, since all of that stays ansible-core's (``_execute_module``).

Any other connection (ssh to a node, a chroot), ``become``, or ``async`` takes ansible-core's
path unchanged.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile

from ansible.plugins.action.normal import ActionModule as NormalAction


class BinaryModuleAction(NormalAction):
    """ansible.builtin.normal, with its temporary-file steps in-process on a local connection."""

    def _in_process(self):
        """Whether the module runs on this very machine as this very user."""
        return (
            getattr(self._connection, "transport", None) == "local"
            and not self._play_context.become
            and getattr(self._connection, "become", None) is None
            and not self._task.async_val
        )

    def _make_tmp_path(self, remote_user=None):
        if not self._in_process():
            return super()._make_tmp_path(remote_user)
        base = os.path.expanduser(
            self.get_shell_option("remote_tmp", default="~/.ansible/tmp")
        )
        os.makedirs(base, mode=0o700, exist_ok=True)
        tmpdir = tempfile.mkdtemp(prefix="ansible-tmp-", dir=base)
        self._cleanup_remote_tmp = True
        self._connection._shell.tmpdir = tmpdir
        return tmpdir

    def _transfer_file(self, local_path, remote_path):
        if not self._in_process():
            return super()._transfer_file(local_path, remote_path)
        try:
            # The module file is the installed collection's; the link goes with the directory.
            os.link(local_path, remote_path)
        except OSError:
            return super()._transfer_file(local_path, remote_path)
        return remote_path

    def _fixup_perms2(self, remote_paths, remote_user=None, execute=True):
        if not self._in_process():
            return super()._fixup_perms2(
                remote_paths, remote_user=remote_user, execute=execute
            )
        if execute:
            for path in remote_paths:
                mode = os.stat(path).st_mode
                # A linked module is already executable; its owner may be someone else.
                if not mode & stat.S_IXUSR:
                    os.chmod(path, mode | stat.S_IXUSR)
        return remote_paths

    def _remove_tmp_path(self, tmp_path, force=False):
        if not self._in_process():
            return super()._remove_tmp_path(tmp_path, force=force)
        if tmp_path is None:
            tmp_path = self._connection._shell.tmpdir
        if tmp_path and (force or self._should_remove_tmp_path(tmp_path)):
            shutil.rmtree(tmp_path, ignore_errors=True)
            self._connection._shell.tmpdir = None
        return None
