"""The macros HTCondor's submit language defines before it reads a file.

HTCondor 24.0 (SubmitMacroDefaults in submit_utils.cpp) predefines, as
defaults a file may override: ARCH, OPSYS, OPSYSVER, OPSYSANDVER,
OPSYSMAJORVER, IsLinux, IsWindows (the submit machine, as its sysapi reads
uname and /etc/issue), SUBMIT_FILE, SUBMIT_TIME (Unix seconds), Year, Month,
Day (local time, zero padded), Cluster/ClusterId = 1, Process/ProcId/Step/
Row/ItemIndex = 0, Node = "", JobId = $(ClusterId).$(ProcId), and
Request_CPUs/Request_Memory/VM_VCPUS/VM_MEMORY as references to the request
commands. SPOOL is left out: a JRS submit host has no spool directory.

`predefined()` is pure (the machine description and the time come in);
`this_machine()` reads them once.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Optional

ISSUE_FILES = ("/etc/issue", "/etc/redhat-release", "/etc/system-release", "/etc/issue.net")

# sysapi_find_linux_name, in its order (the first match wins)
_DISTROS = (
    (("red", "hat"), "RedHat"), (("fedora",), "Fedora"), (("ubuntu",), "Ubuntu"),
    (("debian",), "Debian"), (("scientific", "cern"), "SLCern"),
    (("scientific", "slf"), "SLFermi"), (("scientific",), "SL"), (("centos",), "CentOS"),
    (("rocky",), "Rocky"), (("amazon linux",), "AmazonLinux"), (("opensuse",), "openSUSE"),
    (("suse",), "SUSE"),
)
_ARCHES = {"i86pc": "INTEL", "i686": "INTEL", "i586": "INTEL", "i486": "INTEL",
           "i386": "INTEL", "ia64": "IA64", "x86_64": "X86_64", "amd64": "X86_64",
           "Power Macintosh": "PPC", "ppc": "PPC", "ppc32": "PPC", "ppc64": "PPC64"}


def linux_name(info: str) -> str:
    low = info.lower()
    for words, name in _DISTROS:
        if all(w in low for w in words):
            return name
    return "LINUX"


def _major(info: str) -> int:
    """sysapi_find_major_version: the first run of digits."""
    return _version(info) // 100


def _version(info: str) -> int:
    """sysapi_translate_opsys_version: major * 100 + up to two minor digits."""
    i = 0
    while i < len(info) and not info[i].isdigit():
        i += 1
    major = ""
    while i < len(info) and info[i].isdigit():
        major += info[i]
        i += 1
    minor = ""
    if i < len(info) and info[i] == ".":
        i += 1
        while i < len(info) and info[i].isdigit() and len(minor) < 2:
            minor += info[i]
            i += 1
    return int(major or 0) * 100 + int(minor or 0)


def _clean_issue(first_line: str) -> str:
    """Trailing blanks and the `\\n \\l` escapes Debian and Ubuntu leave, removed."""
    text = first_line
    while True:
        text = text.rstrip()
        if len(text) > 2 and text[-2] == "\\" and text[-1] in "nl":
            text = text[:-2]
            continue
        return text


def machine(sysname: str, arch: str, issue_lines: list) -> dict:
    """ARCH, OPSYS... from uname's sysname and machine and the first lines of the
    issue files (in ISSUE_FILES order, missing ones left out)."""
    out = {"arch": _ARCHES.get(arch, arch)}
    if sysname.lower() == "linux":
        info = "Unknown"
        for line in issue_lines:
            cleaned = _clean_issue(line)
            if linux_name(cleaned) != "LINUX":
                info = cleaned
                break
        name = linux_name(info) if info != "Unknown" else "Unknown"
        major = _major(info) if info != "Unknown" else 0
        out.update(opsys="LINUX", opsysver=str(_version(info) if info != "Unknown" else 0),
                   opsysandver=f"{name}{major}", opsysmajorver=str(major),
                   islinux="1", iswindows="0")
    else:
        name = sysname
        up = sysname.upper()
        out.update(opsys=up, opsysver="0", opsysandver=f"{name}0", opsysmajorver="0",
                   islinux="0", iswindows="0")
    return out


@functools.lru_cache(maxsize=1)
def this_machine() -> tuple:
    uname = os.uname()
    lines = []
    for path in ISSUE_FILES:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines.append(f.readline())
        except OSError:
            continue
    return tuple(sorted(machine(uname.sysname, uname.machine, lines).items()))


def predefined(submit_file: str, now: Optional[float] = None,
               host: Optional[dict] = None) -> dict:
    """The default macro table (lower-case names) for a file submitted at `now`."""
    stamp = int(time.time() if now is None else now)
    local = time.localtime(stamp)
    table = dict(this_machine() if host is None else host)
    table.update({
        "submit_file": submit_file, "submit_time": str(stamp),
        "year": f"{local.tm_year:04d}", "month": f"{local.tm_mon:02d}",
        "day": f"{local.tm_mday:02d}",
        "cluster": "1", "clusterid": "1", "process": "0", "procid": "0", "step": "0",
        "row": "0", "itemindex": "0", "node": "", "jobid": "$(ClusterId).$(ProcId)",
        "request_cpus": "$(RequestCPUs)", "request_memory": "$(RequestMemory)",
        "vm_vcpus": "$(Request_CPUs)", "vm_memory": "$(Request_Memory)",
    })
    return table
