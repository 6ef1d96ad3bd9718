#!/usr/bin/env python3
"""Run a command and report its wall time and peak RSS.

    scripts/measure.py [--json FILE] [--] CMD [ARG...]

Prints one line to stderr when the command ends:

    measure: wall_s=12.345 peak_rss_mb=678 exit=0 cmd=...

peak_rss_mb is the largest resident set of the command or any process it waited for
(getrusage(RUSAGE_CHILDREN).ru_maxrss, which Linux gives in KiB), in MiB. With --json
the same figures are also written to FILE. Exits with the command's exit code.
"""

import json
import resource
import shlex
import subprocess
import sys
import time


def main(argv):
    json_path = None
    args = list(argv)
    while args and args[0].startswith("--"):
        opt = args.pop(0)
        if opt == "--":
            break
        if opt == "--json" and args:
            json_path = args.pop(0)
        else:
            print(f"measure: unknown option {opt}", file=sys.stderr)
            return 2
    if not args:
        print(__doc__.strip(), file=sys.stderr)
        return 2

    start = time.perf_counter()
    try:
        proc = subprocess.Popen(args)
    except OSError as e:
        print(f"measure: cannot run {args[0]}: {e}", file=sys.stderr)
        return 127
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        code = proc.wait()
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak_mb = peak_kib / 1024.0
    if code < 0:  # killed by a signal
        code = 128 - code

    print(
        f"measure: wall_s={wall:.3f} peak_rss_mb={peak_mb:.0f} exit={code} cmd={shlex.join(args)}",
        file=sys.stderr,
    )
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"cmd": args, "exit": code, "wall_s": wall, "peak_rss_mb": peak_mb}, f)
            f.write("\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
