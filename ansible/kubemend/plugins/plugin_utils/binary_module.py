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
``remote_tmp`` (``~`` and ``$VARIABLES`` expanded, as the shell does), the module is hard-linked
into it (copied when a link is not allowed, or when it must be made executable: a link shares the
installed file's mode), and the directory removed with ``shutil.rmtree``. The module still runs
through the connection, with the same arguments file, environment, check and diff mode, no_log
and result handling as ever, since all of that stays ansible-core's (``_execute_module``).

Two more steps cost more than they do on a local connection, and are cut the same way:

- To tell a module's style, ansible-core reads the whole module file (7.7 MB here) in every task,
  although for a binary module it looks at the first kilobyte only and then copies the module by
  its path. This action lets ansible-core read a copy of that first kilobyte instead; what it
  decides (a binary module) and what it runs (the module's own path) stay the same.
- ansible-core runs the module as ``/bin/sh -c '<module> <args> && sleep 0'`` through the
  connection, which itself starts the command with ``/bin/sh -c``: two shells and a ``sleep``
  (``sleep 0`` works around an ssh race). With the default shell executable this action asks for
  the command without that wrapper, so the connection's one shell starts the module.

Any other connection (ssh to a node, a chroot), ``become``, or ``async`` takes ansible-core's
path unchanged.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile

import ansible.plugins.action as action_base
from ansible import constants as C
from ansible.executor import module_common
from ansible.plugins.action.normal import ActionModule as NormalAction

# How much of a module file ansible-core looks at to tell a binary module (module_common._is_binary).
_HEAD_BYTES = 1024


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

    def _configure_module(self, module_name, module_args, task_vars):
        is_binary = getattr(module_common, "_is_binary", None)
        if not self._in_process() or is_binary is None:
            return super()._configure_module(module_name, module_args, task_vars)
        read_whole = action_base.modify_module

        def read_head(*args, **kwargs):
            # modify_module(module_name, module_path, ...): positional up to 2.18, keywords since.
            args = list(args)
            if "module_path" in kwargs:
                module_path = kwargs["module_path"]
            else:
                module_path = args[1]
            with open(module_path, "rb") as module:
                head = module.read(_HEAD_BYTES)
            if not is_binary(head):
                return read_whole(*args, **kwargs)
            # ansible-core's own verdict, on the part of the file it judges by.
            with tempfile.NamedTemporaryFile(dir=C.DEFAULT_LOCAL_TMP, prefix="head-") as copy:
                copy.write(head)
                copy.flush()
                if "module_path" in kwargs:
                    kwargs["module_path"] = copy.name
                else:
                    args[1] = copy.name
                return read_whole(*args, **kwargs)

        action_base.modify_module = read_head
        try:
            return super()._configure_module(module_name, module_args, task_vars)
        finally:
            action_base.modify_module = read_whole

    def _low_level_execute_command(self, cmd, sudoable=True, in_data=None, executable=None, **kwargs):
        if (
            executable is None
            and self._in_process()
            and self._play_context.executable == C.DEFAULT_EXECUTABLE
        ):
            # Not None, yet false: ansible-core then neither wraps cmd in a second shell nor
            # appends `sleep 0`; the local connection runs it with C.DEFAULT_EXECUTABLE.
            executable = ""
        return super()._low_level_execute_command(
            cmd, sudoable=sudoable, in_data=in_data, executable=executable, **kwargs
        )

    def _make_tmp_path(self, remote_user=None):
        if not self._in_process():
            return super()._make_tmp_path(remote_user)
        # As ansible-core's shell does (`mkdir -p "$(echo <remote_tmp>)"`): ~, $HOME, ${USER}.
        base = os.path.expandvars(
            os.path.expanduser(self.get_shell_option("remote_tmp", default="~/.ansible/tmp"))
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
                if not mode & stat.S_IXUSR:
                    # A hard link shares its mode with the installed collection's file: make
                    # the module a copy of its own before changing the mode.
                    copy = path + ".copy"
                    shutil.copyfile(path, copy)
                    os.replace(copy, path)
                    os.chmod(path, stat.S_IMODE(mode) | stat.S_IXUSR)
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
