"""The README's three-machine quick start, really run: three hosts (network namespaces
on one bridge), one configuration directory made with `jrs keygen` and copied to each,
the init script started on each, then `jrs status` and `jrs submit` from another."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from .netlab import NetLab
from .ops import PYTHON, Scratch, wait_for


def test_three_machines_from_the_quick_start(pyz):
    lab = NetLab(3)
    machines: list = []
    try:
        alpha, beta, gamma = lab.addresses
        nodes = f"{alpha} slots=2\n{beta}\n{gamma} slots=1 +Rack=7\n"
        for i in range(3):
            m = Scratch(pyz, master=alpha, nodes=nodes)
            m.prefix = lab.run_in(i)
            machines.append(m)
        first = machines[0]
        (first.conf / "secret").unlink()
        r = first.jrs("keygen", "-c", str(first.conf))
        assert r.returncode == 0, r.stderr
        for m in machines[1:]:  # "copy the directory to every machine"
            shutil.copy2(first.conf / "secret", m.conf / "secret")

        outs = [m.script("start") for m in machines]
        for m, r in zip(machines, outs):
            assert r.returncode == 0, r.stdout + r.stderr + m.logs()
        assert "jrs master: started" in outs[0].stdout and "jrs node: started" in outs[0].stdout
        for r in outs[1:]:
            assert "jrs node: started" in r.stdout and "master" not in r.stdout
        statuses = [m.script("status") for m in machines]
        assert [s.returncode for s in statuses] == [0, 0, 0]
        assert statuses[1].stdout.splitlines()[0] == \
            "jrs master: not run here (this host is not node.master)"

        def pool_from_gamma():
            r = machines[2].jrs("status", "--json", "-c", str(machines[2].conf))
            if r.returncode != 0:
                return None
            nodes = json.loads(r.stdout)["nodes"]
            return nodes if sum(n["state"] == "up" for n in nodes) == 3 else None

        # each start returned once its daemons listened: the pool shows within 5 s
        pool = wait_for("gamma's `jrs status` to show all three nodes", pool_from_gamma, 5)
        slots = {n["name"]: n["slots"] for n in pool}
        assert slots == {f"{alpha}:7082": 2, f"{beta}:7082": os.cpu_count(), f"{gamma}:7082": 1}

        sub = machines[1].base / "sub"
        sub.mkdir()
        (sub / "j.condor").write_text("executable = /bin/echo\narguments = job $(Process)\n"
                                      "output = out.$(Process)\nqueue 4\n")
        r = subprocess.run([*lab.run_in(1), PYTHON, str(machines[1].pyz), "submit", "-c",
                            str(machines[1].conf), "--no-progress", "j.condor"], cwd=sub,
                           capture_output=True, text=True, timeout=120,
                           env={**machines[1].env, "JRS_CACHE": str(machines[1].base / "cache")})
        assert r.returncode == 0, r.stderr + "".join(m.logs() for m in machines)
        assert [(sub / f"out.{i}").read_text() for i in range(4)] == \
            [f"job {i}\n" for i in range(4)]
    finally:
        for m in machines:
            m.cleanup()
        lab.destroy()
