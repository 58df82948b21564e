"""Applying parsed ssh_config files to one host, as OpenSSH 9.x's ``ssh`` (and ``ssh -G``) does.

Pure standard library (no paramiko); imported by ``transport.ssh_resolve`` and ``cli.config_cmd``.
Imports ``transport.ssh_config``. First obtained value wins; ``Host`` and ``Match`` (all, host,
originalhost, user, localuser, exec, canonical, final) switch lines on and off; a second pass is
made only when a ``Match final`` exists (CanonicalizeHostname, which would also force one, is
refused). Every effective value keeps the ``file:line`` that set it. ``%`` tokens and ``~`` are
expanded where ``ssh`` expands them, with the token set it allows there.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import pwd
import socket
import subprocess
from dataclasses import dataclass, field, replace

from ugro_health.transport.ssh_config import (
    ConfigFile,
    Include,
    Option,
    SshConfigError,
    match_pattern,
    match_pattern_list,
    parse_file,
    parse_lines,
)

EXEC_TIMEOUT_S = 10.0  # a `Match exec` command that hangs is an error, not a hung run
DEFAULT_USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
_TIMES = ("connecttimeout", "serveraliveinterval")
PROXY_TOKENS = "hknpr"  # sshconnect.c expand_proxy_command
# Directives that change where or how ssh connects in a way ugro-health does not do:
# honouring them silently differently would connect somewhere else or trust other keys.
_REFUSED = {
    "proxyusefdpass": lambda v: v == "yes",
    "canonicalizehostname": lambda v: v != "no",
    "addressfamily": lambda v: v != "any",
    "bindaddress": lambda v: True,
    "bindinterface": lambda v: True,
    "knownhostscommand": lambda v: v.lower() != "none",
    "revokedhostkeys": lambda v: v.lower() != "none",
    "identityagent": lambda v: v != "SSH_AUTH_SOCK",
    "remotecommand": lambda v: v.lower() != "none",
}


@dataclass(frozen=True, slots=True)
class Local:
    """The local facts tokens and ``Match`` use. ssh takes the home directory (``~``, ``%d``)
    from the passwd entry; we take $HOME when set, so that a changed HOME moves every file
    ugro-health reads together (README, known differences)."""

    user: str
    home: str
    uid: int
    thishost: str

    @classmethod
    def here(cls) -> Local:
        pw = pwd.getpwuid(os.getuid())
        home = os.environ.get("HOME") or pw.pw_dir
        return cls(pw.pw_name, home, os.getuid(), socket.gethostname())


@dataclass(frozen=True, slots=True)
class HostConfig:
    """The options ugro-health uses for one host, as ``ssh -G`` prints them, and their source."""

    host_arg: str
    hostname: str
    user: str
    port: int
    identity_files: tuple[str, ...]  # as written (tokens and ~ unexpanded); () = ssh's defaults
    identities_only: bool
    proxy_jump: str | None
    proxy_command: str | None  # as written; tokens are expanded when it runs
    user_known_hosts: tuple[str, ...]  # expanded, as ssh -G prints them
    global_known_hosts: tuple[str, ...]
    check_host_ip: bool
    host_key_alias: str | None
    hash_known_hosts: bool
    strict_host_key_checking: str
    connect_timeout: int | None
    server_alive_interval: int
    host_key_algorithms: str | None
    refused: tuple[str, ...]  # "Directive value (file:line)" ugro-health cannot honour
    sources: dict[str, str]  # option keyword -> "file:line"
    local: Local

    def tokens(self) -> dict[str, str]:
        """ssh.c's DEFAULT_CLIENT_PERCENT_EXPAND_ARGS for this host."""
        conn = self.local.thishost + self.hostname + str(self.port) + self.user
        return {
            "C": hashlib.sha1(conn.encode()).hexdigest(),
            "L": self.local.thishost.split(".")[0],
            "i": str(self.local.uid),
            "k": self.host_key_alias or self.host_arg,
            "l": self.local.thishost,
            "n": self.host_arg,
            "p": str(self.port),
            "d": self.local.home,
            "h": self.hostname,
            "r": self.user,
            "u": self.local.user,
        }

    def expand_path(self, path: str, what: str) -> str:
        """``~`` (at the start only) then tokens and ``${VAR}``, as ssh expands IdentityFile."""
        return percent_expand(tilde_expand(path, self.local.home), self.tokens(), what, dollar=True)

    def expanded_proxy_command(self) -> str | None:
        if self.proxy_command is None:
            return None
        tokens = {k: v for k, v in self.tokens().items() if k in PROXY_TOKENS}
        return percent_expand(self.proxy_command, tokens, "ProxyCommand")


def tilde_expand(path: str, home: str) -> str:
    """misc.c's tilde_expand: ``~`` or ``~user`` at the start of the path only."""
    if not path.startswith("~"):
        return path
    user, _, rest = path[1:].partition("/")
    if user:
        try:
            home = pwd.getpwnam(user).pw_dir
        except KeyError:
            raise SshConfigError(f"no such user {user!r} in {path!r}") from None
    rest = rest.lstrip("/")
    return home.rstrip("/") + "/" + rest if home else "/" + rest


def percent_expand(value: str, tokens: dict[str, str], what: str, dollar: bool = False) -> str:
    """misc.c's percent_expand (and ${VAR} when ``dollar``): an unknown token is an error."""
    out: list[str] = []
    i = 0
    while i < len(value):
        c = value[i]
        if dollar and value.startswith("${", i):
            end = value.find("}", i + 2)
            name = value[i + 2 : end] if end > 0 else ""
            if not name or name not in os.environ:
                raise SshConfigError(f"{what}: cannot expand environment variable in {value!r}")
            out.append(os.environ[name])
            i = end + 1
            continue
        if c == "%":
            token = value[i + 1 : i + 2]
            if token == "%":
                out.append("%")
            elif token in tokens and token:
                out.append(tokens[token])
            else:
                raise SshConfigError(f"{what}: unknown token %{token} in {value!r}")
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return True


@dataclass(slots=True)
class _State:
    alias: str
    local: Local
    full: bool  # walk every section (an unknown keyword must be seen wherever it is)
    opts: dict[str, Option] = field(default_factory=dict)
    identities: list[Option] = field(default_factory=list)
    final: bool = False
    never: bool = False
    final_host: str = ""

    def apply(self, opt: Option) -> None:
        key = opt.keyword
        if key == "identityfile":
            if all(o.value != opt.value for o in self.identities):
                self.identities.append(opt)
        elif key in ("proxycommand", "proxyjump"):
            # whichever of the two comes first wins, the other is ignored; but (as ssh 9.2
            # does) a `ProxyJump none` still lets a later ProxyCommand through
            jump = self.opts.get("proxyjump")
            jump_blocks = jump is not None and str(jump.value).lower() != "none"
            if key not in self.opts and not (
                jump_blocks if key == "proxycommand" else "proxycommand" in self.opts
            ):
                self.opts[key] = opt
        elif key not in self.opts or (key in _TIMES and self.opts[key].value == "-1"):
            self.opts[key] = opt  # a time of "none" is readconf's unset value: a later one wins

    def value(self, key: str, default: str | None = None) -> str | None:
        opt = self.opts.get(key)
        return default if opt is None else str(opt.value)


class SshConfig:
    """The user's ssh_config file then the system-wide one (each with its Includes), parsed
    once, as ``ssh`` without ``-F`` reads them; ``lookup`` is cheap per host."""

    def __init__(
        self,
        path: str,
        text: str | None = None,
        local: Local | None = None,
        *,
        system: str | None = None,
        system_text: str | None = None,
    ) -> None:
        self.path = path  # "" when only the system file is read
        self.system = system
        self.local = local or Local.here()
        self.error: str | None = None  # a bad line in either file: ssh refuses every host
        self.indexed = True  # False: walk every section (tests compare the two)
        self.roots: tuple[ConfigFile, ...] = ()
        try:
            self.roots = (*self._user(text), *self._system(system_text))
        except SshConfigError as exc:
            self.error = str(exc)

    @property
    def root(self) -> ConfigFile | None:
        return self.roots[0] if self.roots else None

    def _user(self, text: str | None) -> tuple[ConfigFile, ...]:
        if text is not None:
            return (parse_lines(self.path, text.split("\n"), user_config=True),)
        return (parse_file(self.path, user_config=True),) if self.path else ()

    def _system(self, text: str | None) -> tuple[ConfigFile, ...]:
        # ssh reads it without SSHCONF_USERCONF: relative Includes are under /etc/ssh, no `~`;
        # an absent file is no error
        if not self.system:
            return ()
        if text is not None:
            return (parse_lines(self.system, text.split("\n"), user_config=False),)
        if not os.path.isfile(self.system):
            return ()
        return (parse_file(self.system, user_config=False),)

    def lookup(self, alias: str, preset: tuple[Option, ...] = ()) -> HostConfig:
        """What ``ssh alias`` would use (``ssh -F path alias`` without a system file),
        ``preset`` standing for ssh's command-line options (they come first, so they win and
        ``Match user`` sees them); raises ``SshConfigError``."""
        if self.error is not None:
            raise SshConfigError(self.error)
        full = not self.indexed or any(root.has_unknown for root in self.roots)
        state = _State(alias, self.local, full=full)
        for option in preset:
            state.apply(option)
        for root in self.roots:  # each file starts active, as readconf reads each
            self._walk(root, state, True)
        hostname = _hostname(state)
        if any(root.has_final for root in self.roots):  # ssh.c re-reads both files
            state.final, state.final_host = True, hostname
            for root in self.roots:
                self._walk(root, state, True)
        return _result(state, hostname)

    def _walk(self, config: ConfigFile, state: _State, active: bool) -> None:
        # Host lines match the name as typed; on the final pass, the final HostName (ssh.c
        # passes its current `host` to readconf)
        subject = state.final_host if state.final else state.alias
        indices = range(len(config.sections)) if state.full else config.sections_for(subject)
        for i in indices:
            section = config.sections[i]
            if section.host is not None:
                active = not state.never and _host_active(section.host, subject)
            elif section.match is not None:
                active = not state.never and _match(section.match, section.where, state)
            for line in section.body:
                if isinstance(line, Option):
                    if active:
                        state.apply(line)
                elif isinstance(line, Include):
                    never = state.never
                    state.never = never or not active
                    for child in line.files:
                        self._walk(child, state, active)
                    state.never = never
                else:
                    ignore = state.value("ignoreunknown")
                    if not ignore or match_pattern_list(line.keyword, ignore, True) != 1:
                        raise SshConfigError(
                            f"{line.where}: Bad configuration option: {line.keyword}"
                        )


def _host_active(patterns: tuple[str, ...], alias: str) -> bool:
    active = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if match_pattern(alias, pattern[1:] if negated else pattern):
            if negated:
                return False
            active = True
    return active


def _match(words: tuple[str, ...], where: str, state: _State) -> bool:
    """readconf.c's match_cfg_line, evaluated for this host at this point of the pass."""
    host = state.final_host if state.final else _first_pass_host(state)
    ruser = state.value("user") or state.local.user
    result, i = True, 0
    while i < len(words):
        negate = words[i].startswith("!")
        attr = words[i].removeprefix("!").lower()
        if attr == "all":
            return result and not negate
        if attr in ("canonical", "final"):
            result = result and state.final != negate
            i += 1
            continue
        arg = words[i + 1]
        i += 2
        if attr == "exec":
            if not result:
                continue  # ssh skips the command once an earlier criterion failed
            hit = _exec(arg, where, state, host, ruser)
        elif attr == "user":
            hit = match_pattern_list(ruser, arg, False) == 1
        elif attr == "localuser":
            hit = match_pattern_list(state.local.user, arg, False) == 1
        else:
            subject = host if attr == "host" else state.alias
            hit = match_pattern_list(subject.lower(), arg, True) == 1
        result = result and hit != negate
    return result


def _first_pass_host(state: _State) -> str:
    hostname = state.value("hostname")
    if hostname is None:
        return state.alias
    return percent_expand(hostname, {"h": state.alias}, "HostName")


def _exec(command: str, where: str, state: _State, host: str, ruser: str) -> bool:
    local = state.local
    port = state.value("port", "22") or "22"
    conn = local.thishost + host + port + ruser
    tokens = {
        "C": hashlib.sha1(conn.encode()).hexdigest(),
        "L": local.thishost.split(".")[0],
        "d": local.home,
        "h": host,
        "k": state.value("hostkeyalias") or host,
        "l": local.thishost,
        "n": state.alias,
        "p": port,
        "r": ruser,
        "u": local.user,
        "i": str(local.uid),
    }
    cmd = percent_expand(command, tokens, f"{where}: Match exec")
    shell = os.environ.get("SHELL") or "/bin/sh"
    try:
        done = subprocess.run(
            [shell, "-c", cmd],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=EXEC_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SshConfigError(f"{where}: Match exec {cmd!r} could not run: {exc}") from None
    return done.returncode == 0


def _hostname(state: _State) -> str:
    host = _first_pass_host(state)
    return host if is_address(host) else host.lower()


def _result(state: _State, hostname: str) -> HostConfig:
    opts = state.opts
    sources = {key: opt.where for key, opt in opts.items()}
    if state.identities:
        sources["identityfile"] = ", ".join(o.where for o in state.identities)
    jump = state.value("proxyjump")
    jump = _jump(jump) if jump else None
    command = state.value("proxycommand")
    alias = state.value("hostkeyalias")
    timeout = int(state.value("connecttimeout", "-1") or -1)
    partial = HostConfig(
        host_arg=state.alias,
        hostname=hostname,
        user=state.value("user") or state.local.user,
        port=int(state.value("port", "22") or 22),
        identity_files=tuple(str(o.value[0]) for o in state.identities),
        identities_only=state.value("identitiesonly") == "yes",
        proxy_jump=None if not jump or jump.lower() == "none" else jump,
        proxy_command=None if not command or command.lower() == "none" else command,
        user_known_hosts=_files(opts.get("userknownhostsfile"), DEFAULT_USER_KNOWN_HOSTS),
        global_known_hosts=_files(opts.get("globalknownhostsfile"), DEFAULT_GLOBAL_KNOWN_HOSTS),
        check_host_ip=state.value("checkhostip") == "yes",
        host_key_alias=alias.lower() if alias else None,
        hash_known_hosts=state.value("hashknownhosts") == "yes",
        strict_host_key_checking=state.value("stricthostkeychecking", "ask") or "ask",
        connect_timeout=None if timeout < 0 else timeout,
        server_alive_interval=max(0, int(state.value("serveraliveinterval", "0") or 0)),
        host_key_algorithms=state.value("hostkeyalgorithms"),
        refused=_refused(opts),
        sources=sources,
        local=state.local,
    )
    known = tuple(partial.expand_path(p, "UserKnownHostsFile") for p in partial.user_known_hosts)
    return replace(partial, user_known_hosts=known)


def _jump(spec: str) -> str:
    """ProxyJump as ssh -G prints it: comment cut, the last hop without ``ssh://``."""
    spec = spec.split("#")[0].rstrip()
    head, comma, last = spec.rpartition(",")
    return head + comma + last.removeprefix("ssh://")


def _files(opt: Option | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if opt is None:
        return default
    values = tuple(str(v) for v in opt.value)
    return () if values[0].lower() == "none" else values


def _refused(opts: dict[str, Option]) -> tuple[str, ...]:
    refused = [
        f"{key} {opt.value} ({opt.where})"
        for key, opt in opts.items()
        if key in _REFUSED and _REFUSED[key](str(opt.value))
    ]
    command = opts.get("proxycommand")
    if command is not None and command.value == "-":
        refused.append(f"proxycommand - ({command.where})")
    return tuple(refused)
