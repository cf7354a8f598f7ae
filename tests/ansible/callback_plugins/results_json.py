# Stdout callback for tests/ansible.rs: the whole run as one JSON document on stdout, in the
# shape of ansible.posix's json callback (which ansible-core does not ship), so that the tests
# read task results instead of scraping the default callback's text.
from __future__ import annotations

import json

from ansible.parsing.ajson import AnsibleJSONEncoder
from ansible.plugins.callback import CallbackBase
from ansible.release import __version__ as ansible_version

DOCUMENTATION = """
name: results_json
type: stdout
short_description: Every task result as one JSON document
description:
  - "At the end of the run prints one JSON object: C(plays), a list of C(play) and C(tasks),
    each task with C(task) (name, full_name, action) and C(hosts) (host name to result); C(stats),
    host name to counts (ok, changed, failures, skipped, unreachable, ...); and C(ansible_version),
    the version of the ansible-core that ran."
  - Each RESULT is the module's result as the controller saw it, with C(failed), C(skipped) or
    C(unreachable) set by the callback when the task ended that way.
"""


def _task_result(result):
    """The result dict, through the API of ansible-core 2.19 or that of older versions."""
    value = getattr(result, "result", None)
    return value if isinstance(value, dict) else result._result


def _host_name(result):
    host = getattr(result, "host", None) or result._host
    return host.get_name()


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "results_json"

    def __init__(self):
        super().__init__()
        self._plays = []

    def v2_playbook_on_play_start(self, play):
        self._plays.append({"play": {"name": play.get_name()}, "tasks": []})

    def v2_playbook_on_task_start(self, task, is_conditional):
        # name: as written in the task (role tasks without the "role : " prefix); full_name: as
        # the default callback shows it.
        full_name = task.get_name()
        self._plays[-1]["tasks"].append(
            {
                "task": {"name": task.name or full_name, "full_name": full_name, "action": task.action},
                "hosts": {},
            }
        )

    def v2_playbook_on_handler_task_start(self, task):
        self.v2_playbook_on_task_start(task, False)

    def _record(self, result, **outcome):
        record = dict(_task_result(result))
        record.update(outcome)
        self._plays[-1]["tasks"][-1]["hosts"][_host_name(result)] = record

    def v2_runner_on_ok(self, result):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, failed=True)

    def v2_runner_on_skipped(self, result):
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result):
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats):
        hosts = {host: stats.summarize(host) for host in sorted(stats.processed)}
        document = {"plays": self._plays, "stats": hosts, "ansible_version": ansible_version}
        self._display.display(json.dumps(document, cls=AnsibleJSONEncoder, indent=2, sort_keys=True))
