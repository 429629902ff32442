#!/usr/bin/env python3
"""parallel-ssh (PyPI) side of `cargo bench --bench fanout`: one process, one case.

All labels are the same server (127.0.0.1:PORT), as for every other tool of the
benchmark; exit status 0 only when every host succeeded.
"""
import argparse
import sys

import gevent
from pssh.clients import ParallelSSHClient, SSHClient


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", default="run", choices=["run", "put", "get"])
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--cmd", default="true")
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--joins", type=int, default=1)
    ap.add_argument("--local")
    ap.add_argument("--remote")
    ap.add_argument("--protocol", default="scp", choices=["scp", "sftp"])
    # A bastion on 127.0.0.1 (same user and key) in front of every host: parallel-ssh's
    # proxy_host, which logs in to it once per host.
    ap.add_argument("--jump_port", type=int)
    a = ap.parse_args()
    hosts = ["127.0.0.1"] * a.n
    common = dict(user=a.user, pkey=a.key, port=a.port, num_retries=1, allow_agent=False)
    if a.jump_port:
        common.update(proxy_host="127.0.0.1", proxy_port=a.jump_port, proxy_user=a.user, proxy_pkey=a.key)
    failures = 0
    captured = 0

    if a.kind == "run" and not a.joins:
        # Independent queues: one greenlet per host running its commands in turn.
        def worker(_i):
            nonlocal captured
            c = SSHClient("127.0.0.1", **common)
            bad = 0
            for _ in range(a.steps):
                out = c.run_command(a.cmd)
                for line in out.stdout:
                    captured += len(line) + 1
                c.wait_finished(out)
                if out.exit_code != 0:
                    bad += 1
            c.disconnect()
            return bad

        jobs = [gevent.spawn(worker, i) for i in range(a.n)]
        gevent.joinall(jobs, raise_error=True)
        failures = sum(j.value for j in jobs)
    else:
        client = ParallelSSHClient(hosts, pool_size=max(a.n, 1), **common)
        if a.kind == "run":
            # Lockstep: every step waits for every host (the join).
            for _ in range(a.steps):
                output = client.run_command(a.cmd, stop_on_errors=True)
                for host_out in output:
                    for line in host_out.stdout:
                        captured += len(line) + 1
                client.join(output)
                failures += sum(1 for h in output if h.exit_code != 0)
        elif a.kind == "put":
            if a.protocol == "sftp":
                jobs = client.copy_file(a.local, a.remote)
            else:
                jobs = client.scp_send(a.local, a.remote)
            gevent.joinall(jobs, raise_error=True)
        elif a.kind == "get":
            args = [{"local_file": a.local.replace("%LABEL%", "h%d" % (i + 1)), "remote_file": a.remote}
                    for i in range(a.n)]
            if a.protocol == "sftp":
                # copy_args fill %-placeholders: each host's own local file.
                jobs = client.copy_remote_file("%(remote_file)s", "%(local_file)s", copy_args=args)
            else:
                jobs = client.scp_recv(a.remote, a.local, copy_args=args)
            gevent.joinall(jobs, raise_error=True)
    print("captured %d bytes" % captured, file=sys.stderr)
    if failures:
        print("%d failures" % failures, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
