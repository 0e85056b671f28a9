"""Inventories: Ansible INI and YAML files written here, host lists, patterns, become."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import trimitogen as tm

INI = """\
# a comment
bastion.example.com ansible_user=jump

[web]
web[01:03].example.com ansible_user=deploy
web-extra ansible_host=10.0.0.9 ansible_port=2200

[web:vars]
ansible_python_interpreter=/usr/bin/python3
ansible_user=webuser

[db]
db1 ansible_become=yes ansible_become_user=postgres
db2:2222 ansible_become=true

[staging]
web01.example.com
db1

[backend:children]
db

[backend:vars]
ansible_ssh_common_args='-o ProxyJump=jump@bastion.example.com'
ansible_ssh_private_key_file=/keys/id_backend

[all:vars]
ansible_python_interpreter=/usr/bin/python3.11
"""

YAML = """\
all:
  hosts:
    bastion.example.com:
      ansible_user: jump
  vars:
    ansible_python_interpreter: /usr/bin/python3.11
  children:
    web:
      hosts:
        web[01:03].example.com:
          ansible_user: deploy
        web-extra:
          ansible_host: 10.0.0.9
          ansible_port: 2200
      vars:
        ansible_python_interpreter: /usr/bin/python3
        ansible_user: webuser
    backend:
      children:
        db:
          hosts:
            db1:
              ansible_become: true
              ansible_become_user: postgres
            db2:
              ansible_port: 2222
              ansible_become: yes
      vars:
        ansible_ssh_common_args: -o ProxyJump=jump@bastion.example.com
        ansible_ssh_private_key_file: /keys/id_backend
    staging:
      hosts:
        web01.example.com:
        db1:
"""


@pytest.fixture(params=["ini", "yaml"])
def inventory(request: pytest.FixtureRequest, tmp_path: Path) -> tm.Inventory:
    if request.param == "ini":
        path = tmp_path / "hosts"
        path.write_text(INI)
    else:
        path = tmp_path / "hosts.yml"
        path.write_text(YAML)
    return tm.load_inventory(path)


def names(hosts: list[tm.InventoryHost]) -> list[str]:
    return [host.name for host in hosts]


def test_hosts_ranges_and_groups(inventory: tm.Inventory) -> None:
    assert sorted(inventory.hosts) == sorted(
        [
            "bastion.example.com",
            "web01.example.com",
            "web02.example.com",
            "web03.example.com",
            "web-extra",
            "db1",
            "db2",
        ]
    )
    groups = inventory.groups
    assert set(groups["web"]) == {
        "web01.example.com",
        "web02.example.com",
        "web03.example.com",
        "web-extra",
    }
    assert set(groups["backend"]) == {"db1", "db2"}
    assert groups["ungrouped"] == ("bastion.example.com",)
    assert set(groups["all"]) == set(inventory.hosts)


def test_connection_variables_make_the_ssh_hop(inventory: tm.Inventory) -> None:
    hosts = inventory.hosts
    # Host variables win over group variables; deeper groups win over "all".
    assert hosts["web01.example.com"].target.hops == (
        tm.ssh("web01.example.com", username="deploy", python="/usr/bin/python3"),
    )
    assert hosts["web-extra"].target.hops == (
        tm.ssh("10.0.0.9", port=2200, username="webuser", python="/usr/bin/python3"),
    )
    assert hosts["bastion.example.com"].target.hops == (
        tm.ssh("bastion.example.com", username="jump", python="/usr/bin/python3.11"),
    )
    assert hosts["web02.example.com"].target.name == "web02.example.com"


def test_become_adds_a_sudo_hop_with_the_hosts_interpreter(inventory: tm.Inventory) -> None:
    db1 = inventory.hosts["db1"].target
    login = tm.ssh(
        "db1",
        identity_file="/keys/id_backend",
        ssh_args=["-o", "ProxyJump=jump@bastion.example.com"],
        python="/usr/bin/python3.11",
    )
    assert db1.hops == (login, tm.sudo("postgres", python="/usr/bin/python3.11"))
    db2 = inventory.hosts["db2"].target
    assert db2.hops[0] == tm.ssh(
        "db2",
        port=2222,
        identity_file="/keys/id_backend",
        ssh_args=["-o", "ProxyJump=jump@bastion.example.com"],
        python="/usr/bin/python3.11",
    )
    assert db2.hops[1] == tm.sudo("root", python="/usr/bin/python3.11")
    assert str(db2) == (
        "ssh://db2:2222?python=/usr/bin/python3.11&identity_file=/keys/id_backend"
        "&ssh_args=-o%20ProxyJump%3Djump%40bastion.example.com"
        "/sudo://root?python=/usr/bin/python3.11"
    )


WEB = ["web01.example.com", "web02.example.com", "web03.example.com", "web-extra"]
EVERY = ["bastion.example.com", *WEB, "db1", "db2"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("all", EVERY),
        ("*", EVERY),
        ("web", WEB),
        ("web0*", WEB[:3]),
        ("db1", ["db1"]),
        ("web:&staging", ["web01.example.com"]),
        ("web,&staging", ["web01.example.com"]),
        ("backend:!staging", ["db2"]),
        ("web:db", [*WEB, "db1", "db2"]),
        ("all:!web:!db", ["bastion.example.com"]),
        ("!backend", ["bastion.example.com", *WEB]),
        ("~web0[12]", WEB[:2]),
        ("staging:!nothing-here", ["web01.example.com", "db1"]),
        ("b*", ["bastion.example.com", "db1", "db2"]),
        ("db2,web-extra", ["web-extra", "db2"]),
    ],
)
def test_patterns(inventory: tm.Inventory, pattern: str, expected: list[str]) -> None:
    # Always in inventory order, whatever order the pattern names them in.
    assert names(inventory.select(pattern)) == expected


def test_a_pattern_that_matches_nothing_is_an_error(inventory: tm.Inventory) -> None:
    with pytest.raises(ValueError, match="'wbe' matches no host or group"):
        inventory.select("web:wbe")
    with pytest.raises(ValueError, match="empty host pattern"):
        inventory.select(" , ")


def test_targets_of_a_selection_are_named(inventory: tm.Inventory) -> None:
    targets = inventory.targets("db")
    assert [t.name for t in targets] == ["db1", "db2"]
    assert [len(t.hops) for t in targets] == [2, 2]


def test_local_connection_su_become_and_trimitogen_target(tmp_path: Path) -> None:
    path = tmp_path / "inv.ini"
    path.write_text(
        textwrap.dedent(
            """\
            [here]
            me ansible_connection=local ansible_python_interpreter=/usr/bin/python3
            other ansible_connection=local ansible_become=1 ansible_become_method=su \
ansible_become_user=bob ansible_become_password=pw
            chain trimitogen_target=ssh://gw/sudo://app
            """
        )
    )
    hosts = tm.load_inventory(path).hosts
    assert hosts["me"].target.hops == (tm.local(python="/usr/bin/python3"),)
    assert hosts["other"].target.hops == (tm.local(), tm.su("bob", password="pw"))
    assert str(hosts["chain"].target) == "ssh://gw/sudo://app"
    assert hosts["chain"].target.name == "chain"


@pytest.mark.parametrize(
    ("text", "suffix", "words"),
    [
        ("[web\nh1\n", "", "unclosed section"),
        ("[web:nope]\nh1\n", "", "unknown section"),
        ("[web]\nh1 port\n", "", "'port' is not KEY=VALUE"),
        ("[web]\nh1 ansible_connection=winrm\n", "", "ansible_connection 'winrm'"),
        ("[web]\nh1 ansible_become=yes ansible_become_method=pbrun\n", "", "'pbrun'"),
        ("[web]\nh1 ansible_port=ssh\n", "", "ansible_port 'ssh' is not a number"),
        ("[web]\nh[a:3]\n", "", "neither numbers nor single letters"),
        ("[a:children]\nb\n[b:children]\na\n", "", "groups are their own children"),
        ("all: [1, 2]\n", ".yml", "must be a mapping"),
        ("all:\n  hosts: [h1]\n", ".yml", "hosts must be a mapping"),
        ("all:\n  hostz: {}\n", ".yml", "unknown keys hostz"),
        ("all:\n  hosts:\n    h1: 3\n", ".yml", "must map to variables"),
        ("all: {\n", ".yml", "not valid YAML"),
        ("- 1\n", ".yaml", "top level must map"),
        ("ssh://ok\nssh://bad:port\n", "", ":2: target 'ssh://bad:port'"),
    ],
)
def test_bad_inventories_say_where(tmp_path: Path, text: str, suffix: str, words: str) -> None:
    path = tmp_path / ("inventory" + suffix)
    path.write_text(text)
    with pytest.raises(ValueError, match=r"\w") as info:
        tm.load_inventory(path)
    assert words in str(info.value)
    assert str(path) in str(info.value)


def test_host_list(tmp_path: Path) -> None:
    path = tmp_path / "targets.txt"
    path.write_text(
        "# fleet\nweb1\nssh://deploy@web2/sudo://root  # trailing comment\n\nlocal://\n"
    )
    inventory = tm.load_inventory(path)
    assert list(inventory.hosts) == ["web1", "ssh://deploy@web2/sudo://root", "local://"]
    assert [str(t) for t in inventory.targets()] == [
        "ssh://web1",
        "ssh://deploy@web2/sudo://root",
        "local://",
    ]
    assert names(inventory.select("ssh*")) == ["ssh://deploy@web2/sudo://root"]


def test_host_ranges() -> None:
    assert tm.expand_host_range("web[1:3]") == ["web1", "web2", "web3"]
    assert tm.expand_host_range("web[08:10].x") == ["web08.x", "web09.x", "web10.x"]
    assert tm.expand_host_range("db-[a:c]") == ["db-a", "db-b", "db-c"]
    assert tm.expand_host_range("n[0:6:3]") == ["n0", "n3", "n6"]
    assert tm.expand_host_range("r[1:2]c[1:2]") == ["r1c1", "r1c2", "r2c1", "r2c2"]
    assert tm.expand_host_range("plain") == ["plain"]
