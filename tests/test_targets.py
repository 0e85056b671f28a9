"""Target strings: every scheme, options, round trips through str(), bad input; open_chain."""

from __future__ import annotations

import os
import sys

import pytest
import trio

import trimitogen as tm
from tests import remote_helpers as rh
from tests.conftest import WAIT
from trimitogen._methods import Fork, Local, Ssh, Su, Sudo
from trimitogen._targets import as_target


def test_ssh_then_sudo_chain() -> None:
    target = tm.parse_target("ssh://deploy@web1:2222/sudo://root")
    assert target.hops == (tm.ssh("web1", username="deploy", port=2222), tm.sudo("root"))
    assert str(target) == "ssh://deploy@web1:2222/sudo://root"


@pytest.mark.parametrize(
    ("text", "method"),
    [
        ("local://", tm.local()),
        ("local://python3.8", tm.local(python="python3.8")),
        ("local:///usr/bin/python3", tm.local(python="/usr/bin/python3")),
        ("local://?python=/usr/bin/python3%20-I", tm.local(python=["/usr/bin/python3", "-I"])),
        ("ssh://web1", tm.ssh("web1")),
        ("ssh://10.0.0.7:22", tm.ssh("10.0.0.7", port=22)),
        ("ssh://[::1]:2200", tm.ssh("::1", port=2200)),
        (
            "ssh://u@h?python=/usr/bin/python3&check_host_keys=accept",
            tm.ssh("h", username="u", python="/usr/bin/python3", check_host_keys="accept"),
        ),
        (
            "ssh://h?identity_file=/k/id&ssh_path=/opt/ssh&ssh_args=-F%20/dev/null&compression=yes",
            tm.ssh(
                "h",
                identity_file="/k/id",
                ssh_path="/opt/ssh",
                ssh_args=["-F", "/dev/null"],
                compression=True,
            ),
        ),
        ("sudo://root", tm.sudo("root")),
        ("sudo://deploy?sudo_args=-E", tm.sudo("deploy", sudo_args=["-E"])),
        ("sudo://root?python=/usr/bin/python3", tm.sudo(python="/usr/bin/python3")),
        ("su://bob?su_path=/bin/su", tm.su("bob", su_path="/bin/su")),
        ("fork://", tm.fork()),
        ("fork://?preload=json,email.message", tm.fork(preload=["json", "email.message"])),
    ],
)
def test_every_scheme_parses_and_round_trips(text: str, method: object) -> None:
    target = tm.parse_target(text)
    assert target.hops == (method,)
    assert str(target) == text
    assert tm.parse_target(str(target)) == target


@pytest.mark.parametrize(
    ("text", "method"),
    [
        (
            "docker://web?user=app&host=ssh%3A//h&env=A%3D1,B%3D2&cwd=/srv",
            tm.docker("web", user="app", host="ssh://h", env={"A": "1", "B": "2"}, cwd="/srv"),
        ),
        ("docker://web?python=python3.11", tm.docker("web", python="python3.11")),
        ("podman://p?podman_path=/usr/bin/podman", tm.podman("p", podman_path="/usr/bin/podman")),
        ("buildah://b?user=0", tm.buildah("b", user="0")),
        (
            "kubectl://pod1?container=c&namespace=ns&kube_context=prod",
            tm.kubectl("pod1", container="c", namespace="ns", kube_context="prod"),
        ),
        ("lxc://c1?uid=1000&gid=1000", tm.lxc("c1", uid=1000, gid=1000)),
        ("lxd://c?user=0&cwd=/root", tm.lxd("c", user=0, cwd="/root")),
        ("incus://c?incus_args=--project%20p", tm.incus("c", incus_args=["--project", "p"])),
        ("setns://1234?namespaces=mount,pid", tm.setns(1234, namespaces=["mount", "pid"])),
        ("setns://podman:web", tm.setns(container="web", container_kind="podman")),
        ("chroot:///srv/root?user=nobody", tm.chroot("/srv/root", user="nobody")),
        ("doas://deploy", tm.doas("deploy")),
        ("machinectl://m1?user=app", tm.machinectl("m1", user="app")),
        ("jail://j1?jexec_path=/usr/sbin/jexec", tm.jail("j1", jexec_path="/usr/sbin/jexec")),
    ],
)
def test_container_and_namespace_schemes_round_trip(text: str, method: object) -> None:
    target = tm.parse_target(text)
    assert target.hops == (method,)
    assert str(target) == text
    assert tm.parse_target(str(target)) == target


def test_every_method_class_has_a_scheme() -> None:
    from trimitogen import _containers, _methods
    from trimitogen._targets import SCHEMES

    classes = {
        cls
        for module in (_methods, _containers)
        for cls in vars(module).values()
        if isinstance(cls, type)
        and issubclass(cls, _methods._Method)
        and cls not in (_methods._Method, _containers._Tool)
    }
    assert classes == {scheme.method_type for scheme in SCHEMES.values()}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("docker://", "the container is missing"),
        ("setns://", "a process id or a container name is missing"),
        ("docker://x?bogus=1", "unknown option 'bogus' for docker"),
        ("lxc://c?uid=x", "option uid=x"),
        ("docker://x?env=NOEQUALS", "expected NAME=VALUE"),
        ("setns://1?namespaces=mnt", "namespaces must be some of"),
    ],
)
def test_container_scheme_errors_say_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        tm.parse_target(text)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("web1", "ssh://web1"),
        ("deploy@web1:2200/sudo://", "ssh://deploy@web1:2200/sudo://root"),
        ("SSH://h", "ssh://h"),
        ("sudo://", "sudo://root"),
        ("su://", "su://root"),
        ("local://%s" % sys.executable, "local://"),
        ("ssh://h?compression=false&check_host_keys=enforce", "ssh://h"),
    ],
)
def test_shorthands_and_defaults_format_canonically(text: str, canonical: str) -> None:
    assert str(tm.parse_target(text)) == canonical
    assert tm.parse_target(canonical) == tm.parse_target(text)


def test_long_chain_with_paths_in_options_round_trips() -> None:
    hops = (
        tm.ssh("bastion", username="jump", ssh_args=["-o", "ProxyCommand=none"]),
        tm.ssh("10.1.2.3", port=2222, python=["/opt/py/bin/python3", "-X", "utf8"]),
        tm.sudo("app", python="/usr/bin/python3"),
        tm.fork(preload=["json"]),
    )
    text = str(tm.Target(hops))
    assert text.count("://") == 4
    assert tm.parse_target(text).hops == hops


def test_passwords_are_never_written() -> None:
    target = tm.Target((tm.ssh("h", password="secret"), tm.sudo(password="hunter2")))
    assert "secret" not in str(target)
    assert "hunter2" not in str(target)
    assert str(target) == "ssh://h/sudo://root"


def test_name_labels_but_does_not_compare() -> None:
    named = tm.parse_target("ssh://10.0.0.5", name="web5")
    assert named.label == "web5"
    assert tm.parse_target("ssh://10.0.0.5").label == "ssh://10.0.0.5"
    assert named == tm.parse_target("ssh://10.0.0.5")


def test_method_types() -> None:
    kinds = [type(h) for h in tm.parse_target("local://").hops]
    kinds += [type(h) for h in tm.parse_target("ssh://a/sudo://b/su://c/fork://").hops]
    assert kinds == [Local, Ssh, Sudo, Su, Fork]


@pytest.mark.parametrize(
    ("text", "hop", "words"),
    [
        ("", None, "empty target"),
        ("   ", None, "empty target"),
        ("ssh://", 1, "host name is missing"),
        ("ssh://h:99999", 1, "port '99999'"),
        ("ssh://h:", 1, "port ''"),
        ("ssh://h:http", 1, "port 'http'"),
        ("ssh://@h", 1, "user name before '@' is empty"),
        ("ssh://a:b@h", 1, "password in a target string"),
        ("ssh://we b", 1, "not a host name"),
        ("ssh://h/", 1, "not a host name"),
        ("ssh://h/sudo://x?foo=1", 2, "unknown option 'foo' for sudo"),
        ("ssh://h/dockr://c", 2, "unknown scheme 'dockr'"),
        ("ssh://h?compression=maybe", 1, "compression=maybe: expected yes or no"),
        ("ssh://h?check_host_keys=never", 1, "check_host_keys must be"),
        ("ssh://h?x", 1, "'x' is not KEY=VALUE"),
        ("ssh://h?port=22", 1, "unknown option 'port'"),
        ("ssh://h?python=a&python=b", 1, "given twice"),
        ("local://python3?python=python3", 1, "both before '?' and as an option"),
        ("local://?python=", 1, "python must be"),
        ("fork://x", 1, "takes nothing before '?'"),
        ("sudo://bad user", 1, "not a user name"),
        ("ssh://h/web2", 1, "not a host name"),
        ("ssh:/h", 1, "port '/h'"),
    ],
)
def test_bad_strings_name_the_bad_part(text: str, hop: int | None, words: str) -> None:
    with pytest.raises(ValueError, match=r"\w") as info:
        tm.parse_target(text)
    message = str(info.value)
    assert words in message
    if hop is not None:
        assert "hop %d" % hop in message
        assert repr(text.strip()) in message


def test_with_python_replaces_only_defaults() -> None:
    target = tm.parse_target("ssh://h/sudo://root/su://x?python=/opt/py")
    changed = tm.with_python(target, "/usr/bin/python3")
    assert [getattr(h, "python") for h in changed.hops] == [  # noqa: B009
        ("/usr/bin/python3",),
        ("/usr/bin/python3",),
        ("/opt/py",),
    ]


def test_as_target_accepts_strings_methods_and_targets() -> None:
    target = tm.parse_target("local://")
    assert as_target(target) is target
    assert as_target("local://") == target
    assert as_target(tm.local()) == target


async def test_open_chain_nests_each_hop(no_leaked_fds: None) -> None:
    with trio.fail_after(WAIT):
        async with tm.open_chain("local://%s/fork://" % sys.executable, name="copy") as ctx:
            assert ctx.name == "copy"
            assert ctx.via is not None
            assert ctx.via.via is None
            assert await ctx.call(rh.getppid) == ctx.via.pid
            assert await ctx.call(os.getpid) == ctx.pid


async def test_open_chain_propagates_body_errors_as_themselves(no_leaked_fds: None) -> None:
    with trio.fail_after(WAIT), pytest.raises(KeyError, match="mine"):
        async with tm.open_chain("local:///usr/bin/python3/fork://"):
            raise KeyError("mine")


async def test_open_chain_reports_the_failing_hop(no_leaked_fds: None) -> None:
    with trio.fail_after(WAIT), pytest.raises(tm.ConnectError) as info:
        async with tm.open_chain("local://%s/local:///nonexistent/python" % sys.executable):
            pass
    assert "nonexistent" in str(info.value)
