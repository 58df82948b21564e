"""Reading ssh_config files exactly as OpenSSH 9.x's ``readconf.c`` reads them.

Pure standard library (no paramiko), imported by ``transport.ssh_config_eval`` (which applies the
parsed files to one host) and by ``cli.config_init``. Each file is read and tokenised once per run:
lines become ``Host``, ``Match``, ``Include`` (with the included files parsed in place) and option
statements whose values are already checked, so that a bad line anywhere is an error for every
lookup, as it is for ``ssh``. The tokeniser follows ``strdelim`` (keyword, ``Key=value``) and
``argv_split`` (quotes, backslash escapes, a ``#`` that starts an argument ends the line).
"""

from __future__ import annotations

import glob
import os
import re
import socket
from dataclasses import dataclass, field
from functools import lru_cache

MAX_DEPTH = 16  # READCONF_MAX_DEPTH: nested Includes
_WS = " \t\r\n"

# readconf.c's keywords[]: anything else is a "Bad configuration option" unless IgnoreUnknown.
_KEYWORDS = """
addkeystoagent addressfamily afstokenpassing batchmode bindaddress bindinterface
canonicaldomains canonicalizefallbacklocal canonicalizehostname canonicalizemaxdots
canonicalizepermittedcnames casignaturealgorithms certificatefile
challengeresponseauthentication checkhostip cipher ciphers clearallforwardings compression
compressionlevel connectionattempts connecttimeout controlmaster controlpath controlpersist
dsaauthentication dynamicforward enableescapecommandline enablesshkeysign escapechar
exitonforwardfailure fallbacktorsh fingerprinthash forkafterauthentication forwardagent
forwardx11 forwardx11timeout forwardx11trusted gatewayports globalknownhostsfile
globalknownhostsfile2 gssapiauthentication gssapidelegatecredentials hashknownhosts host
hostbasedacceptedalgorithms hostbasedauthentication hostbasedkeytypes hostkeyalgorithms
hostkeyalias hostname identitiesonly identityagent identityfile identityfile2 ignoreunknown
include ipqos kbdinteractiveauthentication kbdinteractivedevices keepalive
kerberosauthentication kerberostgtpassing kexalgorithms knownhostscommand localcommand
localforward loglevel logverbose macs match nohostauthenticationforlocalhost
numberofpasswordprompts passwordauthentication permitlocalcommand permitremoteopen
pkcs11provider port preferredauthentications protocol proxycommand proxyjump proxyusefdpass
pubkeyacceptedalgorithms pubkeyacceptedkeytypes pubkeyauthentication rekeylimit remotecommand
remoteforward requesttty requiredrsasize revokedhostkeys rhostsauthentication
rhostsrsaauthentication rsaauthentication securitykeyprovider sendenv serveralivecountmax
serveraliveinterval sessiontype setenv skeyauthentication smartcarddevice stdinnull
streamlocalbindmask streamlocalbindunlink stricthostkeychecking syslogfacility tcpkeepalive
tisauthentication tunnel tunneldevice updatehostkeys useprivilegedport user userknownhostsfile
userknownhostsfile2 useroaming usersh verifyhostkeydns visualhostkey xauthlocation
"""
KNOWN = frozenset(_KEYWORDS.split())
_STRING_KEYS = """hostname user hostkeyalias hostkeyalgorithms identityagent bindaddress
bindinterface revokedhostkeys ignoreunknown"""
_STRINGS = frozenset(_STRING_KEYS.split())
_FLAGS = frozenset(["identitiesonly", "checkhostip", "hashknownhosts", "proxyusefdpass"])
_ARRAYS = frozenset(("userknownhostsfile", "globalknownhostsfile"))
_COMMANDS = frozenset(("proxycommand", "remotecommand", "localcommand", "knownhostscommand"))
_TIMES = frozenset(("connecttimeout", "serveraliveinterval"))
_CHOICES = {
    "stricthostkeychecking": {
        "true": "yes", "yes": "yes", "false": "no", "no": "no", "off": "no",
        "ask": "ask", "accept-new": "accept-new",
    },
    "canonicalizehostname": {
        "true": "yes", "yes": "yes", "false": "no", "no": "no", "always": "always",
    },
    "addressfamily": {"inet": "inet", "inet6": "inet6", "any": "any"},
}  # fmt: skip
_FLAG_VALUES = {"true": "yes", "yes": "yes", "false": "no", "no": "no"}
_ALIASES = {"identityfile2": "identityfile"}
MATCH_ATTRIBUTES = frozenset(("host", "originalhost", "user", "localuser", "exec"))


class SshConfigError(ValueError):
    """A line ``ssh`` itself refuses; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Option:
    where: str  # "file:line"
    keyword: str
    value: str | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unknown:
    where: str
    keyword: str


@dataclass(frozen=True, slots=True)
class Include:
    where: str
    files: tuple[ConfigFile, ...]


@dataclass(frozen=True, slots=True)
class Section:
    """A ``Host`` or ``Match`` line (or the start of a file) and the lines up to the next."""

    where: str
    host: tuple[str, ...] | None = None  # Host patterns
    match: tuple[str, ...] | None = None  # Match words, as strdelim splits them
    body: list[Option | Unknown | Include] = field(default_factory=list)


@dataclass(slots=True)
class ConfigFile:
    """One parsed file: its sections, and which of them a literal ``Host`` name selects."""

    path: str
    sections: list[Section]
    general: list[int] = field(default_factory=list)
    by_name: dict[str, list[int]] = field(default_factory=dict)
    has_final: bool = False  # a `Match final` anywhere (OpenSSH then does a second pass)
    has_unknown: bool = False

    def index(self) -> None:
        """A ``Host`` line of literal names applies to exactly those names: lookups skip it
        for any other, so a file with a block per node costs O(1) per lookup, not O(nodes)."""
        for i, section in enumerate(self.sections):
            names = section.host
            if names is None or any(not is_literal(n) for n in names):
                self.general.append(i)
            else:
                for name in dict.fromkeys(names):
                    self.by_name.setdefault(name, []).append(i)

    def sections_for(self, alias: str) -> list[int]:
        named = self.by_name.get(alias)
        return sorted(self.general + named) if named else self.general


def is_literal(pattern: str) -> bool:
    return not pattern.startswith("!") and "*" not in pattern and "?" not in pattern


@lru_cache(maxsize=4096)
def _pattern_re(pattern: str) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def match_pattern(string: str, pattern: str) -> bool:
    """match.c's match_pattern: ``*`` and ``?`` only (no character classes), case-sensitive."""
    return _pattern_re(pattern).fullmatch(string) is not None


def match_pattern_list(string: str, patterns: str, dolower: bool) -> int:
    """match.c's match_pattern_list: 1 on a positive match, -1 on a negated one, else 0."""
    found = 0
    for sub in patterns.split(","):
        negated = sub.startswith("!")
        sub = sub[1:] if negated else sub
        if match_pattern(string, sub.lower() if dolower else sub):
            if negated:
                return -1
            found = 1
    return found


def strdelim(s: str | None) -> tuple[str | None, str | None]:
    """misc.c's strdelim (one ``=`` may separate, a ``"`` quotes): (token, rest)."""
    if s is None:
        return None, None
    i = next((k for k, c in enumerate(s) if c in _WS + '"='), -1)
    if i < 0:
        return s, None
    if s[i] == '"':
        s = s[:i] + s[i + 1 :]
        q = s.find('"', i)
        if q < 0:
            return None, None
        return s[:q], s[q + 1 :].lstrip(_WS)
    token, rest = s[:i], s[i + 1 :].lstrip(_WS)
    if s[i] != "=" and rest.startswith("="):
        rest = rest[1:].lstrip(_WS)
    return token, rest


def argv_split(s: str) -> list[str] | None:
    """misc.c's argv_split with terminate_on_comment; None on an unclosed quote."""
    args: list[str] = []
    i, n = 0, len(s)
    while i < n:
        if s[i] in " \t":
            i += 1
            continue
        if s[i] == "#":
            break
        quote, arg = "", []
        while i < n:
            c = s[i]
            if c == "\\" and i + 1 < n and (s[i + 1] in "'\"\\" or (not quote and s[i + 1] == " ")):
                arg.append(s[i + 1])
                i += 2
                continue
            if not quote and c in " \t":
                break
            if not quote and c in "'\"":
                quote = c
            elif quote and c == quote:
                quote = ""
            else:
                arg.append(c)
            i += 1
        if i >= n and quote:
            return None
        args.append("".join(arg))
    return args


def convtime(value: str) -> int | None:
    """misc.c's convtime: ``90``, ``1m30s``, ``1h``; None when malformed."""
    if not value:
        return None
    total = 0
    for number, unit in re.findall(r"(\d+)([sSmMhHdDwW]?)", value):
        total += (
            int(number) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit.lower()]
        )
    if not re.fullmatch(r"(\d+[sSmMhHdDwW]?)+", value):
        return None
    return total


def a2port(value: str) -> int | None:
    if value.isdigit():
        port = int(value)
        return port if 0 < port <= 65535 else None
    try:
        return socket.getservbyname(value, "tcp") or None
    except OSError:
        return None


def parse_file(path: str, *, user_config: bool, depth: int = 0) -> ConfigFile:
    """Read and check one file and everything it includes; raises ``SshConfigError``."""
    if depth > MAX_DEPTH:
        raise SshConfigError(f"{path}: too many recursive configuration includes")
    try:
        with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as f:
            lines = f.read().split("\n")
    except IsADirectoryError:
        lines = []
    except OSError as exc:
        raise SshConfigError(f"cannot read ssh config {path}: {exc.strerror or exc}") from None
    return parse_lines(path, lines, user_config=user_config, depth=depth)


def parse_lines(path: str, lines: list[str], *, user_config: bool, depth: int = 0) -> ConfigFile:
    """Parse the lines of ``path`` (already read); raises ``SshConfigError``."""
    parsed = ConfigFile(path, [Section(where=f"{path}:0")])
    for number, line in enumerate(lines, 1):
        _parse_line(parsed, line, f"{path}:{number}", user_config, depth)
    parsed.index()
    return parsed


def _parse_line(parsed: ConfigFile, line: str, where: str, user_config: bool, depth: int) -> None:
    line = line.rstrip(_WS + "\f")
    keyword, rest = strdelim(line)
    if keyword == "":
        keyword, rest = strdelim(rest)
    if not keyword or keyword.startswith("#"):
        return
    keyword = keyword.lower()
    rest = rest.lstrip(_WS) if rest is not None else None
    if not rest:
        raise SshConfigError(f'{where}: no argument after keyword "{keyword}"')
    args = argv_split(rest)
    if args is None:
        raise SshConfigError(f"{where}: invalid quotes")
    if keyword == "host":
        if not args or any(a == "" for a in args):
            raise SshConfigError(f"{where}: keyword host empty argument")
        parsed.sections.append(Section(where=where, host=tuple(args)))
    elif keyword == "match":
        words = _match_words(rest, where)
        parsed.has_final |= any(w.lstrip("!").lower() == "final" for w in words)
        parsed.sections.append(Section(where=where, match=words))
    elif keyword == "include":
        files = tuple(_include(a, where, user_config, depth) for a in args)
        flat = tuple(f for group in files for f in group)
        parsed.has_final |= any(f.has_final for f in flat)
        parsed.has_unknown |= any(f.has_unknown for f in flat)
        parsed.sections[-1].body.append(Include(where, flat))
    elif keyword not in KNOWN:
        parsed.has_unknown = True
        parsed.sections[-1].body.append(Unknown(where, keyword))
    else:
        keyword = _ALIASES.get(keyword, keyword)
        value = _value(keyword, rest, args, where)
        if value is not None:
            parsed.sections[-1].body.append(Option(where, keyword, value))


def _match_words(rest: str, where: str) -> tuple[str, ...]:
    """The words of a Match line, checked as match_cfg_line checks them (no evaluation)."""
    words: list[str] = []
    s: str | None = rest
    while s:
        word, s = strdelim(s)
        if word is None:
            raise SshConfigError(f"{where}: Bad Match condition (unclosed quote)")
        if word.startswith("#"):
            break
        words.append(word)
    attributes, i = 0, 0
    while i < len(words):
        attr = words[i].removeprefix("!").lower()
        if attr == "all":
            extra = words[i + 1 :]
            if attributes > 1 or extra:
                raise SshConfigError(f"{where}: '{words[i]}' cannot be combined with others")
            return tuple(words)
        attributes += 1
        if attr in ("canonical", "final"):
            i += 1
            continue
        if attr not in MATCH_ATTRIBUTES:
            raise SshConfigError(f"{where}: Unsupported Match attribute {attr}")
        if i + 1 >= len(words) or words[i + 1] == "":
            raise SshConfigError(f"{where}: Missing Match criteria for {attr}")
        i += 2
    if attributes == 0:
        raise SshConfigError(f"{where}: One or more attributes required for Match")
    return tuple(words)


def _include(arg: str, where: str, user_config: bool, depth: int) -> list[ConfigFile]:
    if arg.startswith("~") and not user_config:
        raise SshConfigError(f"{where}: bad include path {arg}")
    if not arg.startswith(("/", "~")):
        arg = ("~/.ssh/" if user_config else "/etc/ssh/") + arg
    paths = sorted(glob.glob(os.path.expanduser(arg)))  # glob(3) with GLOB_TILDE: $HOME
    return [parse_file(p, user_config=user_config, depth=depth + 1) for p in paths]


def _value(keyword: str, rest: str, args: list[str], where: str) -> str | tuple[str, ...] | None:
    """The checked value of a line, None for keywords ugro-health neither uses nor refuses."""
    if keyword in _COMMANDS or keyword == "proxyjump":
        return rest.lstrip(_WS + "=")
    if keyword in _ARRAYS or keyword == "identityfile":
        if not args or any(a == "" for a in args):
            raise SshConfigError(f"{where}: keyword {keyword} empty argument")
        if keyword == "identityfile" and len(args) > 1:
            raise SshConfigError(f"{where}: identityfile: garbage at end of line")
        if any(a.lower() == "none" for a in args) and len(args) > 1:
            raise SshConfigError(f'{where}: keyword {keyword} "none" argument must appear alone')
        return tuple(args)
    if keyword not in _STRINGS | _FLAGS | _TIMES | _CHOICES.keys() | {"port"}:
        return None
    if len(args) != 1 or not args[0]:
        what = "Missing argument" if not args or not args[0] else "garbage at end of line"
        raise SshConfigError(f"{where}: {keyword}: {what}")
    arg = args[0]
    checked: str | None = arg
    if keyword in _FLAGS:
        checked = _FLAG_VALUES.get(arg.lower())
    elif keyword in _CHOICES:
        checked = _CHOICES[keyword].get(arg.lower())
    elif keyword in _TIMES:
        seconds = -1 if arg == "none" else convtime(arg)
        checked = None if seconds is None else str(seconds)
    elif keyword == "port":
        port = a2port(arg)
        checked = None if port is None else str(port)
    if checked is None:
        raise SshConfigError(f'{where}: {keyword}: unsupported value "{arg}"')
    return checked
