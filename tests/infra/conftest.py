"""Fixtures for the offline infra checks (run by scripts/infra-check).

The main test suite (scripts/test runs pytest over tests/) also walks into this
folder; its environment lacks these checks' tools (checkov and its HCL
parser), so the folder is skipped there unless scripts/infra-check set
CMK_INFRA_CHECK.
"""

import os
import shutil
import sys
from pathlib import Path

if not os.environ.get("CMK_INFRA_CHECK"):
    collect_ignore_glob = ["*"]
else:
    import json

    import pytest

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import infra_lib

    @pytest.fixture(scope="session")
    def schema():
        return json.loads((infra_lib.HERE / "provider-schema.json").read_text())

    @pytest.fixture(scope="session")
    def report_cmk():
        return infra_lib.run_checkov(infra_lib.INFRA, "customer-managed")

    @pytest.fixture(scope="session")
    def report_mm():
        return infra_lib.run_checkov(infra_lib.INFRA, "microsoft-managed")

    @pytest.fixture
    def tree_copy(tmp_path):
        """A fresh copy of infra/ to break deliberately."""
        dst = tmp_path / "infra"
        shutil.copytree(infra_lib.INFRA, dst, ignore=shutil.ignore_patterns(".terraform", "__pycache__"))
        return dst
