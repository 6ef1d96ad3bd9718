"""What the benchmark scripts share: the full-load report line against the peer, and the
measurements of a running inlet (peak RSS, a free port)."""

import json
import socket


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    return 0


def report_full_load(case, rows, size, source, size_note, inlet_json, peer_json):
    """Prints each side's figures from its `{"wall_s", "peak_rss_mb"}` file, then the
    `bench: <case> ...` line with the ratio (none when inlet did not run)."""

    def figures(name, path):
        with open(path) as f:
            m = json.load(f)
        wall = m["wall_s"]
        rps = rows / wall
        mbps = size / wall / 1e6
        print(
            f"bench: {name:<6} {rows} rows in {wall:8.2f}s  {rps:12,.0f} rows/s  "
            f"{mbps:8.1f} MB/s  peak RSS {m['peak_rss_mb']:8.0f} MB"
        )
        return rps, m["peak_rss_mb"]

    print(f"bench: source {source}: {rows} rows, {size / 1e6:.1f} MB ({size_note})")
    if inlet_json is None:
        figures("duckdb", peer_json)
        print("bench: inlet not run; no comparison line")
        return 0
    inlet_rps, inlet_rss = figures("inlet", inlet_json)
    peer_rps, _ = figures("duckdb", peer_json)
    ratio = inlet_rps / peer_rps
    print(f"bench: inlet/duckdb throughput ratio {ratio:.2f}")
    print(
        f"bench: {case} "
        f"inlet_rows_per_s={inlet_rps:.0f} peer_rows_per_s={peer_rps:.0f} "
        f"ratio={ratio:.2f} inlet_peak_rss_mb={inlet_rss:.0f}"
    )
    return 0
