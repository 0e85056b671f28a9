"""Real third-party packages imported over the wire into children that do not have them."""

from __future__ import annotations

import ast
import os
import sys
import textwrap
from pathlib import Path

import pytest
import trio

import trimitogen as tm
from tests.conftest import REPO, WAIT, MasterOnly, discover_interpreters, skip_or_fail
from trimitogen._methods import Local


def _minor(label: str) -> tuple[int, ...]:
    version = label.rsplit("-", 1)[-1].replace("python", "")
    return tuple(int(part) for part in version.split(".") if part.isdigit())


_VERSIONED = {label: path for label, path in discover_interpreters().items() if _minor(label)}
#: The oldest and the newest child Python on the machine (3.8 and 3.13 here).
OLDEST_AND_NEWEST = sorted({min(_VERSIONED, key=_minor), max(_VERSIONED, key=_minor)})


def isolated(label: str) -> Local:
    """A child that sees no site-packages (``-I -S``), so it must get packages over the wire."""
    return tm.local(python=[_VERSIONED[label], "-I", "-S"])


USES_SIX = """
    from six.moves import range
    from six.moves.urllib.parse import quote
    import six  # type: ignore[import-untyped]

    def run():
        return (list(range(3)), quote("a b"), six.PY3, six.moves.__name__)
"""


@pytest.mark.parametrize("label", OLDEST_AND_NEWEST)
async def test_six_moves_work_over_the_wire(master_only: MasterOnly, label: str) -> None:
    # six puts its own finder at the end of sys.meta_path, after the child's importer: that
    # importer must let it answer for six.moves rather than end the search.
    import six  # type: ignore[import-untyped]

    master_only({"uses_six_tmg.py": USES_SIX})
    import uses_six_tmg  # type: ignore[import-not-found]

    with trio.fail_after(WAIT):
        async with tm.open_context(isolated(label)) as ctx:
            assert await ctx.call(uses_six_tmg.run) == ([0, 1, 2], "a%20b", True, "six.moves")
            origin = await ctx.call(eval, "__import__('six').__file__")
            assert origin == "master:" + six.__file__


#: What a child does with requests and the package data requests needs (certifi's CA bundle).
USES_REQUESTS = """
    import importlib.resources
    import os
    import pkgutil
    import sys

    def run():
        import certifi
        import requests

        prepared = requests.Request(
            "GET", "http://example.invalid/", params={"q": "a b", "n": "1"}
        ).prepare()
        where = certifi.where()
        with open(where, "rb") as f:
            bundle = f.read()
        return {
            "url": prepared.url,
            "requests_file": requests.__file__,
            "has_site": "site" in sys.modules,
            "where": where,
            "where_mode": oct(os.stat(os.path.dirname(os.path.dirname(where))).st_mode & 0o777),
            "bundle_size": len(bundle),
            "is_pem": bundle.count(b"-----BEGIN CERTIFICATE-----") > 10,
            "get_data": pkgutil.get_data("certifi", "cacert.pem") == bundle,
            "read_text": importlib.resources.read_text("certifi", "cacert.pem").encode() == bundle,
        }
"""

#: Runs in a master process of its own (its sys.path decides which requests it serves).
MASTER_SCRIPT = """
    import sys
    import trio
    import trimitogen as tm
    import uses_requests_tmg

    async def main():
        with trio.fail_after(60):
            async with tm.open_context(tm.local(python=[sys.argv[1], "-I", "-S"])) as ctx:
                result = await ctx.call(uses_requests_tmg.run)
                result["stats"] = (ctx.import_stats.resources_sent, ctx.import_stats.modules_sent)
        result["where_left"] = __import__("os").path.exists(result["where"])
        print(repr(result))

    if __name__ == "__main__":
        trio.run(main)
"""

#: The last requests, urllib3 and idna that run on Python 3.8, put there by scripts/setup.sh.
PY38_PACKAGES = REPO / ".cache" / "py38-packages"


@pytest.mark.parametrize("label", OLDEST_AND_NEWEST)
async def test_requests_prepares_a_request_over_the_wire(tmp_path: Path, label: str) -> None:
    # A -I -S child has neither requests nor certifi: both come over the wire, and so does
    # certifi's cacert.pem, which requests reads at import (certifi.where() must be a real file).
    exe = _VERSIONED[label]
    path = [str(tmp_path), str(REPO)]
    if _minor(label) < (3, 10):
        if not (PY38_PACKAGES / "requests").is_dir():
            skip_or_fail("%s is missing: run scripts/setup.sh" % PY38_PACKAGES)
        path.insert(0, str(PY38_PACKAGES))
    (tmp_path / "uses_requests_tmg.py").write_text(textwrap.dedent(USES_REQUESTS))
    (tmp_path / "master.py").write_text(textwrap.dedent(MASTER_SCRIPT))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    with trio.fail_after(WAIT):
        done = await trio.run_process(
            [sys.executable, str(tmp_path / "master.py"), exe],
            env=env,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode()[-4000:]
    result = ast.literal_eval(done.stdout.decode().strip().splitlines()[-1])
    assert result["url"] == "http://example.invalid/?q=a+b&n=1"
    assert result["requests_file"].startswith("master:")
    assert result["has_site"] is False
    # The copy of the CA bundle lives in a directory private to the context, gone at its exit.
    assert os.path.basename(result["where"]) == "cacert.pem"
    assert result["where_mode"] == "0o700"
    assert result["where_left"] is False
    assert result["bundle_size"] > 10_000
    assert result["is_pem"]
    # The same bytes through pkgutil and the 3.8-era importlib.resources API.
    assert result["get_data"]
    assert result["read_text"]
    resources_sent, modules_sent = result["stats"]
    assert resources_sent >= 1
    assert modules_sent > 20
