#!/usr/bin/env python3
"""Write the jrs(1) man page from the usage text, so the two never disagree.

    python3 debian/mkman.py [--pyz dist/jrs.pyz] [--date YYYY-MM-DD] > jrs.1

The usage text (`jrs --help`) and each command's help (`jrs COMMAND --help`) are
read from the jrs package inside the given .pyz (or the source tree) and turned
into roff; only the FILES section is written here.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

FILES = [
    ("/etc/jrs/node.master", "the master's host[:port], one line, the same on every machine"),
    ("/etc/jrs/node.list", "the nodes, one per line, the same on every machine"),
    ("/etc/jrs/secret", "the shared secret (mode 0600); `jrs keygen` writes one"),
    ("/etc/default/jrs", "settings of the init script and the systemd units"),
    ("/var/log/jrs/master.log, /var/log/jrs/node.log",
     "the daemons' logs when started by /etc/init.d/jrs-daemon (with systemd: "
     "journalctl -u jrs-master -u jrs-node)"),
    ("/var/lib/jrs/master, /var/lib/jrs/node", "the daemons' state (taskfiles and sandboxes)"),
]


def esc(text: str) -> str:
    """Escape one line of text for roff."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def paragraphs(lines: list) -> list:
    out, cur = [], []
    for line in lines:
        if line.strip():
            cur.append(line)
        elif cur:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def sections(doc: str) -> dict:
    """`Title:` headed blocks of the top-level usage text, plus the lead paragraph."""
    out: dict = {"": []}
    key = ""
    for line in doc.splitlines():
        m = re.match(r"^([A-Z][A-Za-z ]+):\s*(.*)$", line)
        if m and not line.startswith(" "):
            key = m.group(1)
            out[key] = [m.group(2)] if m.group(2) else []
        else:
            out[key].append(line)
    return out


def definitions(lines: list) -> list:
    """(term, text) pairs from an indented two-column list, continuation lines joined."""
    items: list = []
    for line in lines:
        if not line.strip():
            continue
        m = re.match(r"^  (\S(?:.*?\S)?)(?:\s{2,}|\s*$)(.*)$", line)
        if m and not line.startswith("   "):
            items.append([m.group(1), m.group(2).strip()])
        elif items:
            items[-1][1] += " " + line.strip()
    return items


def render(doc: str, helps: dict, version: str, date: str) -> str:
    sec = sections(doc)
    title = sec[""][0].strip()
    name = title.split(":", 1)[1].strip() if ":" in title else title
    out = [f'.TH JRS 1 "{date}" "jrs {version}" "User Commands"',
           ".SH NAME", f"jrs \\- {esc(name)}", ".SH SYNOPSIS", ".nf"]
    out += [esc(line.strip()) for line in sec["Usage"] if line.strip()]
    out += [".fi", ".SH DESCRIPTION", esc(title), ".SH COMMANDS"]
    for command, text in definitions(sec["Commands"]):
        out += [".TP", f"\\fB{esc(command)}\\fR", esc(text)]
    for command, text in helps.items():
        out.append(f'.SS "jrs {command}"')
        for para in paragraphs(text.splitlines()):
            if para[0].startswith(("Usage:", "Example")) or para[0].startswith("  "):
                out += [".PP", ".nf", *[esc(line) for line in para], ".fi"]
            else:
                out += [".PP", *[esc(line.strip()) for line in para]]
    out.append(".SH OPTIONS")
    for option, text in definitions(sec["Options"]):
        out += [".TP", f"\\fB{esc(option)}\\fR", esc(text)]
    out.append(".SH ENVIRONMENT")
    for var, text in definitions(sec["Environment"]):
        out += [".TP", f"\\fB{esc(var)}\\fR", esc(text)]
    status = " ".join(line.strip() for line in sec["Exit status"] if line.strip())
    out += [".SH \"EXIT STATUS\"", esc(status), ".SH FILES"]
    for path, text in FILES:
        out += [".TP", f"\\fI{esc(path)}\\fR", esc(text)]
    out += [".SH \"SEE ALSO\"", "condor_submit(1), condor_status(1), condor_q(1)", ""]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--pyz", default=str(root / "dist" / "jrs.pyz"))
    parser.add_argument("--date", default=time.strftime("%Y-%m-%d", time.gmtime()))
    opts = parser.parse_args()
    sys.path.insert(0, opts.pyz)
    import jrs
    import jrs.__main__ as cli

    sys.stdout.write(render(cli.__doc__, cli.COMMAND_HELP, jrs.__version__, opts.date))
    return 0


if __name__ == "__main__":
    sys.exit(main())
