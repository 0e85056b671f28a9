"""Container, namespace and doas methods: their argv, and real runs where the machine allows.

Tools that cannot run here (no docker daemon, no cluster, no LXC/Incus, no systemd as PID 1, not
FreeBSD) are replaced by ``tests/container_stub.py``, which accepts exactly the real tool's
syntax for the subcommand used and then runs the command locally.  nsenter (setns), chroot and
doas are the real tools.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

import trimitogen as tm
from tests import remote_helpers as rh
from tests.conftest import WAIT, skip_or_fail
from tests.infra import Users
from trimitogen.core.connect import build_plan
from trimitogen.core.errors import PasswordError

STUB = Path(__file__).with_name("container_stub.py")
PY = sys.executable


def argv_of(method: Any) -> list[str]:
    """The argv before the interpreter's ``-c STAGE1``."""
    argv: list[str] = build_plan(method.spec()).argv
    assert argv[-2] == "-c"
    return argv[:-2]


@pytest.mark.parametrize(
    ("method", "want"),
    [
        (
            tm.docker("web", user="app:app", host="ssh://h", env={"B": "2", "A": "1"}, cwd="/srv"),
            "docker --host ssh://h exec --interactive --user app:app --workdir /srv "
            "--env A=1 --env B=2 web python3",
        ),
        (
            tm.podman("db", docker_path="x")
            if False
            else tm.podman("db", podman_args=["--tty=false"]),
            "podman exec --interactive --tty=false db python3",
        ),
        (
            tm.buildah("wc", user="0", env={"A": "1"}, cwd="/"),
            "buildah run --user 0 --workingdir / --env A=1 wc -- python3",
        ),
        (
            tm.kubectl("api-0", container="app", namespace="prod", kube_context="k1"),
            "kubectl --context k1 --namespace prod exec --stdin api-0 --container app -- python3",
        ),
        (
            tm.lxc("c1", uid=1000, gid=100, env={"A": "1"}, python="/usr/bin/python3"),
            "lxc-attach --name c1 --clear-env --uid 1000 --gid 100 --set-var A=1 -- "
            "/usr/bin/python3",
        ),
        (
            tm.lxd("remote:c1", user=1000, cwd="/root", env={"A": "1"}),
            "lxc exec remote:c1 --mode=non-interactive --user 1000 --cwd /root --env A=1 "
            "-- python3",
        ),
        (tm.incus("c2"), "incus exec c2 --mode=non-interactive -- python3"),
        (
            tm.setns(42, namespaces=["net", "uts"], uid=0, gid=0, cwd="/"),
            "nsenter --target 42 --net --uts --setuid 0 --setgid 0 --wd=/ -- python3",
        ),
        (tm.setns(42), "nsenter --target 42 --all -- python3"),
        (
            tm.setns(container="web", container_kind="podman", query_path="/bin/podman"),
            [
                "/bin/sh",
                "-c",
                "pid=$(/bin/podman inspect --format '{{.State.Pid}}' web) && "
                '[ -n "$pid" ] && [ "$pid" != 0 ] || { echo \'trimitogen: podman container web '
                'has no running process\' >&2; exit 1; }; exec nsenter --target "$pid" "$@"',
                "trimitogen-setns",
                "--all",
                "--",
                "python3",
            ],
        ),
        (
            tm.chroot("/srv/jail", user="nobody:nogroup"),
            "chroot --userspec=nobody:nogroup /srv/jail python3",
        ),
        (tm.doas("bob", python="/usr/bin/python3"), "doas -n -u bob /usr/bin/python3"),
        (tm.doas("bob", password="pw", python="python3"), "doas -u bob python3"),
        (
            tm.machinectl("m1", user="app", cwd="/", env={"A": "1"}),
            "systemd-run --machine=m1 --pipe --wait --quiet --collect --uid=app "
            "--working-directory=/ --setenv=A=1 -- python3",
        ),
        (tm.jail("www", user="www"), "jexec -U www www python3"),
        (tm.local(python="/usr/bin/python3", env={"A": "1"}), "/usr/bin/python3"),
    ],
    ids=lambda v: v.kind if hasattr(v, "kind") else "",
)
def test_argv(method: Any, want: str | list[str]) -> None:
    assert argv_of(method) == (want.split() if isinstance(want, str) else want)


def test_methods_are_hashable_data_and_keep_passwords_out_of_repr() -> None:
    assert tm.docker("a", env={"X": "1"}) == tm.docker("a", env={"X": "1"})
    assert len({tm.docker("a"), tm.docker("a"), tm.podman("a")}) == 2
    assert "secret" not in repr(tm.doas("bob", password="secret"))
    with pytest.raises(ValueError, match="without '='"):
        tm.docker("a", env={"A=B": "1"})
    with pytest.raises(ValueError, match="namespaces"):
        tm.setns(1, namespaces=["nett"])
    with pytest.raises(TypeError, match="not a str"):
        tm.kubectl("p", kubectl_args="--foo")


# --- stubs of tools that cannot run here ---------------------------------------------------------

#: How to make each stubbed method: (tool the stub plays, factory(stub path) -> method, whether
#: the method carries env and cwd).
STUBBED: dict[str, tuple[str, Callable[[str, dict[str, str], str], Any]]] = {
    "docker": ("docker", lambda p, e, c: tm.docker("box", docker_path=p, env=e, cwd=c, python=PY)),
    "podman": ("podman", lambda p, e, c: tm.podman("box", podman_path=p, env=e, cwd=c, python=PY)),
    "buildah": (
        "buildah",
        lambda p, e, c: tm.buildah("box", buildah_path=p, env=e, cwd=c, python=PY),
    ),
    "kubectl": (
        "kubectl",
        lambda p, e, c: tm.kubectl(
            "pod-0", namespace="ns", container="c", kubectl_path=p, python=PY
        ),
    ),
    "lxc": (
        "lxc-attach",
        lambda p, e, c: tm.lxc("box", uid=0, gid=0, env=e, lxc_attach_path=p, python=PY),
    ),
    "lxd": ("lxc", lambda p, e, c: tm.lxd("box", user=0, env=e, cwd=c, lxc_path=p, python=PY)),
    "incus": ("incus", lambda p, e, c: tm.incus("box", env=e, cwd=c, incus_path=p, python=PY)),
    "machinectl": (
        "systemd-run",
        lambda p, e, c: tm.machinectl("m", env=e, cwd=c, systemd_run_path=p, python=PY),
    ),
    "jail": ("jexec", lambda p, e, c: tm.jail("j", user="root", jexec_path=p, python=PY)),
}

CARRIES_ENV = {"docker", "podman", "buildah", "lxc", "lxd", "incus", "machinectl"}
CARRIES_CWD = {"docker", "podman", "buildah", "lxd", "incus", "machinectl"}


@pytest.fixture
def stub_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STUB_LOG", str(tmp_path / "stub.log"))
    return tmp_path


def make_stub(directory: Path, tool: str) -> str:
    path = directory / tool
    path.write_text('#!/bin/sh\nexec %s %s %s "$@"\n' % (PY, STUB, tool))
    path.chmod(0o755)
    return str(path)


def stub_log(directory: Path) -> list[list[str]]:
    return [json.loads(line) for line in (directory / "stub.log").read_text().splitlines()]


@pytest.mark.parametrize("kind", sorted(STUBBED))
async def test_stubbed_tool_runs_the_context(
    kind: str, stub_dir: Path, no_leaked_fds: None
) -> None:
    tool, factory = STUBBED[kind]
    work = stub_dir / "work"
    work.mkdir()
    env = {"TMG_STUB_VAR": "set by " + kind} if kind in CARRIES_ENV else {}
    cwd = str(work) if kind in CARRIES_CWD else None
    method = factory(make_stub(stub_dir, tool), env, cwd)  # type: ignore[arg-type]
    with trio.fail_after(WAIT):
        async with tm.open_context(method) as ctx:
            assert await ctx.call(rh.echo, [1, "two"]) == [1, "two"]
            if env:
                assert await ctx.call(os.getenv, "TMG_STUB_VAR") == env["TMG_STUB_VAR"]
            if cwd:
                assert await ctx.call(os.getcwd) == cwd
    [logged] = stub_log(stub_dir)
    assert logged[0] == tool
    assert logged[1:-2] == argv_of(method)[1:]


async def test_stubbed_container_as_a_hop(stub_dir: Path, no_leaked_fds: None) -> None:
    docker = tm.docker("box", docker_path=make_stub(stub_dir, "docker"), python=PY, cwd="/")
    with trio.fail_after(WAIT):
        async with (
            tm.open_context(tm.local(), name="host") as host,
            tm.open_context(docker, via=host, name="box") as box,
        ):
            assert await box.call(os.getcwd) == "/"
            assert await box.call(os.getppid) != os.getpid()
            assert await box.call(rh.echo, "through a hop") == "through a hop"
    assert stub_log(stub_dir)[0][:3] == ["docker", "exec", "--interactive"]


async def test_failing_tool_is_a_connect_error(stub_dir: Path, no_leaked_fds: None) -> None:
    # The stub refuses an option the real tool does not have, as the real tool would.
    method = tm.docker("box", docker_path=make_stub(stub_dir, "docker"), docker_args=["--bogus"])
    with trio.fail_after(WAIT), pytest.raises(tm.ConnectError, match="docker container box"):
        async with tm.open_context(method):
            pass


# --- setns: namespaces made by unshare -----------------------------------------------------------


def _child_of(pid: int) -> int | None:
    try:
        children = Path("/proc/%d/task/%d/children" % (pid, pid)).read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


@pytest.fixture
def namespaced_process() -> Iterator[int]:
    """A process in new mount, uts, ipc, net, pid and user namespaces, host name tmg-ns."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        skip_or_fail("unshare as root is needed to make namespaces")
    outer = subprocess.Popen(
        ["unshare", "--mount", "--uts", "--ipc", "--net", "--pid", "--fork", "--user",
         "--map-root-user", "--mount-proc", "sh", "-c", "hostname tmg-ns && exec sleep 120"],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        inner = None
        while time.monotonic() < deadline:
            inner = _child_of(outer.pid)
            if inner is not None and os.readlink("/proc/%d/exe" % inner).endswith("sleep"):
                break
            time.sleep(0.02)
        else:
            pytest.fail("unshare did not start its child")
        assert inner is not None
        yield inner
    finally:
        outer.kill()
        outer.wait()


async def test_setns_enters_every_namespace(namespaced_process: int, no_leaked_fds: None) -> None:
    target = namespaced_process
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.setns(target, python=PY, env={"TMG_NS": "1"})) as ctx:
            assert await ctx.call(socket.gethostname) == "tmg-ns"
            for ns in ("mnt", "uts", "ipc", "net", "pid", "user"):
                theirs = os.readlink("/proc/%d/ns/%s" % (target, ns))
                assert await ctx.call(os.readlink, "/proc/self/ns/" + ns) == theirs
            assert await ctx.call(os.getenv, "TMG_NS") == "1"
            # A new pid namespace: only sleep (1) and nsenter's child are in it.
            assert await ctx.call(os.getpid) < 10


async def test_setns_finds_a_container_by_name(
    namespaced_process: int,
    stub_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_leaked_fds: None,
) -> None:
    monkeypatch.setenv("STUB_PID", str(namespaced_process))
    monkeypatch.setenv("STUB_CONTAINER", "box")
    docker = make_stub(stub_dir, "docker")
    method = tm.setns(container="box", query_path=docker, namespaces=["uts"], python=PY)
    with trio.fail_after(WAIT):
        async with tm.open_context(method) as ctx:
            assert await ctx.call(socket.gethostname) == "tmg-ns"
        missing = tm.setns(container="nothing", query_path=docker, python=PY)
        with pytest.raises(tm.ConnectError, match="No such object: nothing"):
            async with tm.open_context(missing):
                pass


# --- chroot: a root the test builds --------------------------------------------------------------


@pytest.fixture
def chroot_root(tmp_path: Path) -> Iterator[Path]:
    """/usr bind-mounted under a new root with the merged-/usr links, /dev/null and /tmp."""
    if os.geteuid() != 0 or shutil.which("chroot") is None:
        skip_or_fail("chroot as root is needed")
    root = tmp_path / "root"
    (root / "usr").mkdir(parents=True)
    for link in ("bin", "lib", "lib64", "sbin"):
        if os.path.islink("/" + link):
            (root / link).symlink_to(os.readlink("/" + link))
    (root / "dev").mkdir()
    os.mknod(root / "dev" / "null", 0o666 | 0o020000, os.makedev(1, 3))
    (root / "tmp").mkdir(mode=0o1777)
    (root / "etc").mkdir()
    (root / "etc" / "marker").write_text("inside the chroot\n")
    subprocess.run(["mount", "--bind", "/usr", str(root / "usr")], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root / "usr")], check=True)


async def test_chroot_runs_under_the_new_root(chroot_root: Path, no_leaked_fds: None) -> None:
    method = tm.chroot(str(chroot_root), python="/usr/bin/python3", env={"TMG_ROOT": "yes"})
    with trio.fail_after(WAIT):
        async with tm.open_context(method) as ctx:
            assert await ctx.call(rh.read_text, "/etc/marker") == "inside the chroot\n"
            assert await ctx.call(os.getcwd) == "/"
            assert await ctx.call(os.getenv, "TMG_ROOT") == "yes"
            assert await ctx.call(rh.echo, {"a": (1, 2)}) == {"a": (1, 2)}


# --- doas: Debian's package, with a doas.conf the test writes ------------------------------------


@pytest.fixture
def doas_conf(users: Users) -> Iterator[Users]:
    if shutil.which("doas") is None:
        skip_or_fail("doas is not installed (scripts/setup.sh installs it)")
    conf = Path("/etc/doas.conf")
    if conf.exists():
        skip_or_fail("/etc/doas.conf exists already; the test would overwrite it")
    conf.write_text(
        "permit nopass root as %s\npermit %s as %s\n"
        % (users.target.name, users.sudo.name, users.nopw.name)
    )
    conf.chmod(0o400)
    try:
        yield users
    finally:
        conf.unlink()


async def test_doas_without_password(doas_conf: Users, no_leaked_fds: None) -> None:
    method = tm.doas(doas_conf.target.name, python="/usr/bin/python3")
    with trio.fail_after(WAIT):
        async with tm.open_context(method) as ctx:
            assert await ctx.call(os.getuid) == doas_conf.target.uid


async def test_doas_answers_its_prompt_as_a_hop(doas_conf: Users, no_leaked_fds: None) -> None:
    users = doas_conf
    with trio.fail_after(WAIT):
        async with tm.open_context(tm.sudo(users.sudo.name), name="as-sudo-user") as hop:
            method = tm.doas(users.nopw.name, password=users.sudo.password)
            async with tm.open_context(method, via=hop) as ctx:
                assert await ctx.call(os.getuid) == users.nopw.uid
            with pytest.raises(PasswordError, match="refused"):
                async with tm.open_context(tm.doas(users.nopw.name, password="wrong"), via=hop):
                    pass
            with pytest.raises(PasswordError, match="password is required"):
                async with tm.open_context(tm.doas(users.nopw.name), via=hop):
                    pass


# --- env= and cwd= of local() ---------------------------------------------------------------------


async def test_local_env_and_cwd_apply_before_the_runtime_starts(
    tmp_path: Path, no_leaked_fds: None
) -> None:
    method = tm.local(env={"TMG_LOCAL": "v1", "PYTHONDONTWRITEBYTECODE": "1"}, cwd=tmp_path)
    with trio.fail_after(WAIT):
        async with tm.open_context(method) as ctx:
            assert await ctx.call(os.getenv, "TMG_LOCAL") == "v1"
            assert await ctx.call(os.getcwd) == str(tmp_path)
            # The rest of the environment is inherited.
            assert await ctx.call(os.getenv, "PATH") == os.environ["PATH"]
            # And through a hop: applied by the intermediate, where the new process starts.
            inner = tm.local(python=PY, env={"TMG_LOCAL": "v2"}, cwd="/")
            async with tm.open_context(inner, via=ctx) as below:
                assert await below.call(os.getenv, "TMG_LOCAL") == "v2"
                assert await below.call(os.getcwd) == "/"
    assert "TMG_LOCAL" not in os.environ


async def test_local_cwd_that_does_not_exist_is_a_connect_error(tmp_path: Path) -> None:
    with trio.fail_after(WAIT), pytest.raises(tm.ConnectError, match="missing"):
        async with tm.open_context(tm.local(cwd=tmp_path / "missing")):
            pass
