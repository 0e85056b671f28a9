"""Inventories: Ansible INI and YAML inventory files and plain host lists, as targets.

Only what decides where code runs is read: groups and their children, host and group
variables, and the connection variables below.  ssh settings stay OpenSSH's own: trimitogen
runs ``ssh``, so ``~/.ssh/config`` applies unchanged.

============================================  ==================================================
variable                                      becomes
============================================  ==================================================
``ansible_host``, ``ansible_port``,           the ssh hop's host name, port and user
``ansible_user``
``ansible_python_interpreter``                ``python`` of the hops on that host
``ansible_ssh_private_key_file``              ``identity_file``
``ansible_password``, ``ansible_ssh_pass``    the ssh password
``ansible_ssh_common_args``,                  ``ssh_args``
``ansible_ssh_extra_args``
``ansible_connection``                        ``ssh`` (default) or ``local``
``ansible_become``, ``ansible_become_user``,  a sudo (or su) hop after the login
``ansible_become_method``,
``ansible_become_password``
``trimitogen_target``                         a whole target string, used as it is
============================================  ==================================================
"""

from __future__ import annotations

import ast
import fnmatch
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._methods import Method, local, ssh, su, sudo
from ._targets import Target, parse_target

_RANGE = re.compile(r"\[([0-9a-zA-Z]+):([0-9a-zA-Z]+)(?::([0-9]+))?\]")


@dataclass(frozen=True)
class InventoryHost:
    """One host of an inventory: its name, where it runs, its groups and merged variables."""

    name: str
    target: Target
    groups: tuple[str, ...]
    variables: Mapping[str, Any]


@dataclass
class _Group:
    name: str
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    variables: dict[str, Any] = field(default_factory=dict)


class Inventory:
    """Hosts and groups read from an inventory file; :meth:`select` picks hosts by pattern."""

    def __init__(
        self,
        groups: Mapping[str, _Group],
        host_vars: Mapping[str, Mapping[str, Any]],
        source: str,
    ) -> None:
        self.source = source
        self._groups = dict(groups)
        self._check_cycles()
        hosts: dict[str, InventoryHost] = {}
        for name, own in host_vars.items():
            groups_of = self._groups_of(name)
            merged: dict[str, Any] = {}
            for group in groups_of:
                merged.update(self._groups[group].variables)
            merged.update(own)
            try:
                target = host_target(name, merged)
            except ValueError as exc:
                raise ValueError("%s: host %r: %s" % (source, name, exc)) from None
            hosts[name] = InventoryHost(name, target, tuple(groups_of), merged)
        self.hosts: Mapping[str, InventoryHost] = hosts

    @property
    def groups(self) -> dict[str, tuple[str, ...]]:
        """Every group and the names of all hosts in it (its children's included)."""
        return {name: tuple(self._members(name)) for name in self._groups}

    def _check_cycles(self) -> None:
        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in path:
                raise ValueError(
                    "%s: groups are their own children: %s"
                    % (self.source, " -> ".join((*path, name)))
                )
            for child in self._groups[name].children:
                visit(child, (*path, name))

        for name in self._groups:
            visit(name, ())

    def _depth(self, name: str) -> int:
        """How far below ``all`` a group is: deeper groups' variables win."""
        if name == "all":
            return 0
        parents = [g.name for g in self._groups.values() if name in g.children]
        return 1 + max((self._depth(p) for p in parents), default=0)

    def _groups_of(self, host: str) -> list[str]:
        direct = {g.name for g in self._groups.values() if host in g.hosts}
        found = set(direct)
        changed = True
        while changed:
            changed = False
            for group in self._groups.values():
                if group.name not in found and found.intersection(group.children):
                    found.add(group.name)
                    changed = True
        found.add("all")
        return sorted(found, key=lambda g: (self._depth(g), g))

    def _members(self, group: str) -> list[str]:
        if group == "all":
            return list(self.hosts)
        names: set[str] = set()
        pending = [group]
        while pending:
            current = self._groups[pending.pop()]
            names.update(current.hosts)
            pending.extend(current.children)
        return [name for name in self.hosts if name in names]

    def _match(self, term: str) -> set[str]:
        if term in ("all", "*"):
            return set(self.hosts)
        if term in self._groups:
            return set(self._members(term))
        if term in self.hosts:
            return {term}
        if term.startswith("~"):
            regex = re.compile(term[1:])
            names = [n for n in self._groups if regex.match(n)]
            hosts = {n for n in self.hosts if regex.match(n)}
        else:
            names = fnmatch.filter(self._groups, term)
            hosts = set(fnmatch.filter(self.hosts, term))
        for name in names:
            hosts.update(self._members(name))
        return hosts

    def select(self, pattern: str = "all") -> list[InventoryHost]:
        """The hosts a pattern names, in inventory order, as Ansible's ``--limit`` reads it.

        Terms are separated by ``,`` (or ``:`` when there is no comma): a host or group name, a
        glob such as ``web*``, or ``~regex``.  Plain terms are united; ``&term`` keeps only
        hosts also in ``term``; ``!term`` removes ``term``'s hosts.  A plain or ``&`` term that
        matches nothing raises :class:`ValueError` (a typo should not quietly shrink a run).
        """
        separator = "," if "," in pattern else ":"
        terms = [t.strip() for t in pattern.split(separator) if t.strip()]
        if not terms:
            raise ValueError("empty host pattern")
        chosen: set[str] = set()
        intersect: list[set[str]] = []
        exclude: set[str] = set()
        positive = False
        for term in terms:
            kind, name = (term[0], term[1:]) if term[0] in "&!" else ("", term)
            matched = self._match(name)
            if not matched and kind != "!":
                raise ValueError(
                    "%s: pattern %r: %r matches no host or group" % (self.source, pattern, name)
                )
            if kind == "&":
                intersect.append(matched)
            elif kind == "!":
                exclude |= matched
            else:
                positive = True
                chosen |= matched
        if not positive:
            chosen = set(self.hosts)
        for matched in intersect:
            chosen &= matched
        chosen -= exclude
        return [host for name, host in self.hosts.items() if name in chosen]

    def targets(self, pattern: str = "all") -> list[Target]:
        """The targets of :meth:`select`, each named after its host."""
        return [host.target for host in self.select(pattern)]


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "yes", "true", "on", "y")
    return bool(value)


def _python(value: Any) -> list[str] | None:
    if value is None or str(value).startswith("auto"):
        return None
    return shlex.split(str(value))


def host_target(name: str, variables: Mapping[str, Any]) -> Target:
    """The target an inventory host's merged variables describe (see the module's table)."""
    if "trimitogen_target" in variables:
        return parse_target(str(variables["trimitogen_target"]), name=name)
    python = _python(variables.get("ansible_python_interpreter"))
    connection = str(variables.get("ansible_connection", "ssh"))
    hops: list[Method] = []
    if connection == "local":
        hops.append(local(python=python))
    elif connection in ("ssh", "smart", "paramiko"):
        port = variables.get("ansible_port", variables.get("ansible_ssh_port"))
        user = variables.get("ansible_user", variables.get("ansible_ssh_user"))
        identity = variables.get("ansible_ssh_private_key_file")
        password = variables.get("ansible_password", variables.get("ansible_ssh_pass"))
        args: list[str] = []
        for key in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
            args += shlex.split(str(variables.get(key) or ""))
        try:
            port_number = None if port is None else int(port)
        except ValueError:
            raise ValueError("ansible_port %r is not a number" % (port,)) from None
        hops.append(
            ssh(
                str(variables.get("ansible_host", name)),
                username=None if user is None else str(user),
                port=port_number,
                identity_file=None if identity is None else str(identity),
                password=None if password is None else str(password),
                ssh_args=args,
                python=python or "python3",
            )
        )
    else:
        raise ValueError(
            "ansible_connection %r is not supported (ssh or local; or give trimitogen_target)"
            % connection
        )
    if _truthy(variables.get("ansible_become", False)):
        user = str(variables.get("ansible_become_user", "root"))
        method = str(variables.get("ansible_become_method", "sudo"))
        password = variables.get("ansible_become_password", variables.get("ansible_become_pass"))
        secret = None if password is None else str(password)
        if method == "sudo":
            hops.append(sudo(user, password=secret, python=python))
        elif method == "su":
            hops.append(su(user, password=secret, python=python))
        else:
            raise ValueError("ansible_become_method %r is not supported (sudo or su)" % method)
    return Target(tuple(hops), name)


def expand_host_range(pattern: str) -> list[str]:
    """Ansible's host ranges: ``web[01:03]`` is web01, web02, web03; ``db-[a:c]``, ``[1:9:2]``."""
    match = _RANGE.search(pattern)
    if match is None:
        return [pattern]
    start, end, step_text = match.group(1), match.group(2), match.group(3)
    step = int(step_text) if step_text else 1
    if start.isdigit() and end.isdigit():
        width = len(start) if start.startswith("0") else 0
        values = ["%0*d" % (width, n) for n in range(int(start), int(end) + 1, step)]
    elif len(start) == 1 and len(end) == 1 and start.isalpha() and end.isalpha():
        values = [chr(c) for c in range(ord(start), ord(end) + 1, step)]
    else:
        raise ValueError("host range %r is neither numbers nor single letters" % match.group(0))
    if not values:
        raise ValueError("host range %r is empty" % match.group(0))
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [name for value in values for name in expand_host_range(head + value + tail)]


def _ini_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _ini_host_line(line: str, source: str, number: int) -> tuple[list[str], dict[str, Any]]:
    try:
        words = shlex.split(line, comments=True)
    except ValueError as exc:
        raise ValueError("%s:%d: %s" % (source, number, exc)) from None
    name, pairs = words[0], words[1:]
    variables: dict[str, Any] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise ValueError("%s:%d: %r is not KEY=VALUE" % (source, number, pair))
        variables[key] = _ini_value(value)
    host, colon, port = name.rpartition(":")
    if colon and port.isdigit() and "]" not in port and host.count(":") == 0:
        name = host
        variables.setdefault("ansible_port", int(port))
    try:
        return expand_host_range(name), variables
    except ValueError as exc:
        raise ValueError("%s:%d: %s" % (source, number, exc)) from None


def parse_ini_inventory(text: str, source: str = "<ini>") -> Inventory:
    """An Ansible INI inventory: ``[group]``, ``[group:vars]`` and ``[group:children]``."""
    groups: dict[str, _Group] = {"all": _Group("all"), "ungrouped": _Group("ungrouped")}
    host_vars: dict[str, dict[str, Any]] = {}
    section, kind = "ungrouped", "hosts"
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise ValueError("%s:%d: unclosed section %r" % (source, number, line))
            section, _, kind = line[1:-1].partition(":")
            kind = kind or "hosts"
            if kind not in ("hosts", "vars", "children") or not section:
                raise ValueError("%s:%d: unknown section %r" % (source, number, line))
            groups.setdefault(section, _Group(section))
            continue
        group = groups[section]
        if kind == "vars":
            key, equals, value = line.partition("=")
            if not equals:
                raise ValueError("%s:%d: %r is not KEY=VALUE" % (source, number, line))
            group.variables[key.strip()] = _ini_value(value.strip())
        elif kind == "children":
            child = line.split()[0]
            groups.setdefault(child, _Group(child))
            group.children.append(child)
        else:
            names, variables = _ini_host_line(line, source, number)
            for name in names:
                host_vars.setdefault(name, {}).update(variables)
                if name not in group.hosts:
                    group.hosts.append(name)
    _ungroup(groups)
    return Inventory(groups, host_vars, source)


def _ungroup(groups: dict[str, _Group]) -> None:
    """Hosts listed in a named group are not also in ``ungrouped``."""
    named = {h for g in groups.values() if g.name not in ("all", "ungrouped") for h in g.hosts}
    groups["ungrouped"].hosts = [h for h in groups["ungrouped"].hosts if h not in named]


def parse_yaml_inventory(text: str, source: str = "<yaml>") -> Inventory:
    """An Ansible YAML inventory: groups with ``hosts``, ``children`` and ``vars``."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError("%s: not valid YAML: %s" % (source, exc)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError("%s: the top level must map group names to groups" % source)
    groups: dict[str, _Group] = {"all": _Group("all"), "ungrouped": _Group("ungrouped")}
    host_vars: dict[str, dict[str, Any]] = {}

    def read_group(name: str, body: Any, where: str) -> None:
        group = groups.setdefault(name, _Group(name))
        if body is None:
            return
        if not isinstance(body, dict):
            raise ValueError("%s: group %s must be a mapping" % (source, where))
        unknown = set(body) - {"hosts", "children", "vars"}
        if unknown:
            raise ValueError(
                "%s: group %s: unknown keys %s (hosts, children, vars)"
                % (source, where, ", ".join(sorted(map(str, unknown))))
            )
        for key, what in (("hosts", "hosts"), ("children", "children"), ("vars", "vars")):
            if not isinstance(body.get(key) or {}, dict):
                raise ValueError("%s: group %s: %s must be a mapping" % (source, where, what))
        group.variables.update(body.get("vars") or {})
        for pattern, own in (body.get("hosts") or {}).items():
            if own is not None and not isinstance(own, dict):
                raise ValueError(
                    "%s: host %s of %s must map to variables" % (source, pattern, where)
                )
            try:
                expanded = expand_host_range(str(pattern))
            except ValueError as exc:
                raise ValueError("%s: group %s: %s" % (source, where, exc)) from None
            for host in expanded:
                host_vars.setdefault(host, {}).update(own or {})
                if host not in group.hosts:
                    group.hosts.append(host)
        for child, child_body in (body.get("children") or {}).items():
            if str(child) not in group.children:
                group.children.append(str(child))
            read_group(str(child), child_body, "%s > %s" % (where, child))

    for name, body in data.items():
        read_group(str(name), body, str(name))
    # Hosts directly under "all" are the ungrouped ones, as in Ansible.
    groups["ungrouped"].hosts += [
        h for h in groups["all"].hosts if h not in groups["ungrouped"].hosts
    ]
    groups["all"].hosts = []
    _ungroup(groups)
    return Inventory(groups, host_vars, source)


def parse_host_list(lines: Iterable[str], source: str = "<hosts>") -> Inventory:
    """One target string (or bare ssh host) per line; ``#`` starts a comment."""
    groups = {"all": _Group("all"), "ungrouped": _Group("ungrouped")}
    host_vars: dict[str, dict[str, Any]] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            parse_target(line)
        except ValueError as exc:
            raise ValueError("%s:%d: %s" % (source, number, exc)) from None
        host_vars[line] = {"trimitogen_target": line}
        groups["ungrouped"].hosts.append(line)
    return Inventory(groups, host_vars, source)


def load_inventory(path: str | Path) -> Inventory:
    """Read an inventory file: YAML (``.yml``, ``.yaml``, or a first line ``---``), a host list
    (every line one word, such as ``ssh://web1/sudo://root``), or else Ansible INI."""
    file = Path(path)
    text = file.read_text()
    lines = [raw.split("#", 1)[0].strip() for raw in text.splitlines()]
    words = [line for line in lines if line and not line.startswith(";")]
    if file.suffix in (".yml", ".yaml") or (words and words[0] == "---"):
        return parse_yaml_inventory(text, str(file))
    if words and all(len(w.split()) == 1 and not w.startswith("[") for w in words):
        return parse_host_list(text.splitlines(), str(file))
    return parse_ini_inventory(text, str(file))
