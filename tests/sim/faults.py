"""The nemesis: faults at random steps, each drawn from the run's generator.

Kinds (a shape enables a subset):
  node-kill    kill -9 the node daemon; its jobs run on; restarted 0.1-3 s later
  node-crash   power loss: daemon and jobs die, disk kept, new boot id; back 0.5-8 s later
  master-kill  kill -9 the master; restarted 0.1-3 s later (it rebuilds from hellos)
  submit-kill  kill -9 a `jrs submit`; the user runs the same command again 0.2-3 s later
  reset        reset one connection (both directions lose what is in flight)
  partition    two hosts cannot talk for 0.5-30 s (connections across reset after 20 s)
  master-cut   the same between the master and one node or submit host
  stall        a process stops for 0.5-10 s (SIGSTOP, a swapping host)
  disk         a node's disk fails writes (ENOSPC or EIO, each write at 50%) for 0.5-5 s
  ctrl-c       Ctrl-C on a `jrs submit`: its cluster is removed
The time the last fault's effect ends is `world.last_fault`; liveness counts from it.
"""

from __future__ import annotations

import errno

from .master import MasterProc


class Nemesis:
    def __init__(self, world) -> None:
        self.w = world
        self.sim = world.sim
        self.kinds = tuple(world.shape.faults)

    def plan(self) -> None:
        if self.kinds:
            self.sim.after(self.sim.rng.uniform(0.5, self.w.shape.fault_gap), self._strike)

    def _strike(self) -> None:
        w, rng = self.w, self.sim.rng
        if self.sim.now > w.shape.fault_window:
            return
        kind = rng.choice(self.kinds)
        what = getattr(self, "_" + kind.replace("-", "_"))()
        if what:
            w.fault_log.append(f"t={self.sim.now:.2f} {kind} {what}")
            w.note(f"fault {kind} {what}")
        self.sim.after(rng.expovariate(1.0 / w.shape.fault_gap), self._strike)

    def _until(self, t: float) -> None:
        self.w.last_fault = max(self.w.last_fault, t)

    # ------------------------------------------------------------ kinds

    def _node_kill(self) -> str:
        host = self.sim.rng.choice(sorted(self.w.hosts.values(), key=lambda h: h.name))
        if host.daemon is None or not host.daemon.alive:
            return ""
        host.daemon.die()
        host.daemon = None
        delay = self.sim.rng.uniform(0.1, 3.0)
        self.sim.after(delay, self._node_back, host)
        self._until(self.sim.now + delay)
        return host.name

    def _node_back(self, host) -> None:
        if host.up and host.daemon is None:
            self.w.new_node(host)

    def _node_crash(self) -> str:
        host = self.sim.rng.choice(sorted(self.w.hosts.values(), key=lambda h: h.name))
        if not host.up:
            return ""
        host.crash()
        delay = self.sim.rng.uniform(0.5, 8.0)
        self.sim.after(delay, self._power_on, host)
        self._until(self.sim.now + delay)
        return host.name

    def _power_on(self, host) -> None:
        host.power_on()
        self.w.new_node(host)

    def _master_kill(self) -> str:
        m = self.w.master
        if m is None or not m.alive:
            return ""
        m.die()
        delay = self.sim.rng.uniform(0.1, 3.0)
        self.sim.after(delay, self._master_back, m.host)
        self._until(self.sim.now + delay)
        return "master"

    def _master_back(self, hostname: str) -> None:
        from .world import _Host
        self.w.master = MasterProc(self.w, _Host(hostname, self.w.disks[hostname]))

    def _live_submitters(self) -> list:
        return [p for name, p in sorted(self.w.subs.items())
                if p.alive and name not in self.w.done]

    def _submit_kill(self) -> str:
        subs = self._live_submitters()
        if not subs:
            return ""
        p = self.sim.rng.choice(subs)
        p.die()
        delay = self.sim.rng.uniform(0.2, 3.0)
        self.sim.after(delay, self.w.start_submitter, p.spec)
        self._until(self.sim.now + delay)
        return p.spec.name

    def _reset(self) -> str:
        label = self.w.net.reset_random()
        if label:
            self._until(self.sim.now)
        return label or ""

    def _partition(self) -> str:
        hosts = ["master", *sorted(self.w.hosts), *sorted({s.host for s in self.w.specs})]
        a, b = self.sim.rng.sample(hosts, 2)
        seconds = self.sim.rng.uniform(0.5, 30.0)
        self.w.net.partition(a, b, seconds)
        self._until(self.sim.now + seconds)
        return f"{a} | {b} for {seconds:.1f}s"

    def _master_cut(self) -> str:
        hosts = [*sorted(self.w.hosts), *sorted({s.host for s in self.w.specs})]
        other = self.sim.rng.choice(hosts)
        seconds = self.sim.rng.uniform(0.5, 30.0)
        self.w.net.partition("master", other, seconds)
        self._until(self.sim.now + seconds)
        return f"master | {other} for {seconds:.1f}s"

    def _stall(self) -> str:
        procs = [self.w.master] + [h.daemon for h in self.w.hosts.values()] \
            + self._live_submitters()
        procs = sorted((p for p in procs if p is not None and p.alive), key=lambda p: p.name)
        if not procs:
            return ""
        p = self.sim.rng.choice(procs)
        seconds = self.sim.rng.uniform(0.5, 10.0)
        p.stall(seconds)
        if p is self.w.master:
            self.w.master_stalls.append((p, self.sim.now, self.sim.now + seconds))
        self._until(self.sim.now + seconds)
        return f"{p.name} for {seconds:.1f}s"

    def _disk(self) -> str:
        host = self.sim.rng.choice(sorted(self.w.hosts.values(), key=lambda h: h.name))
        code = self.sim.rng.choice((errno.ENOSPC, errno.EIO))
        seconds = self.sim.rng.uniform(0.5, 5.0)
        host.disk.fail(code, self.sim.now + seconds, 0.5)
        self._until(self.sim.now + seconds)
        return f"{host.name} {errno.errorcode[code]} for {seconds:.1f}s"

    def _ctrl_c(self) -> str:
        subs = [p for p in self._live_submitters() if p.started]
        if not subs:
            return ""
        p = self.sim.rng.choice(subs)
        self.w.interrupted.add(p.spec.name)
        p.interrupt()
        self._until(self.sim.now)
        return p.spec.name
