# -*- coding: utf-8 -*-
# Copyright: kubemend contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The action of kubemend.microk8s.cert_refresh: see plugins/plugin_utils/binary_module.py."""

from __future__ import annotations

from ansible_collections.kubemend.microk8s.plugins.plugin_utils.binary_module import (
    BinaryModuleAction,
)


class ActionModule(BinaryModuleAction):
    """Runs the module; on a local connection without the shell round trips."""
