"""The peer for benches/vector_search.rs: hnswlib on the same vectors, parameters and queries.

Usage (the Rust bench calls it): hnswlib_peer.py DIR DIM M EF_CONSTRUCTION EF,EF,... K
Prints one `hnswlib ef=.. recall=.. qps=.. p50=..µs p99=..µs` line per ef, single-threaded.
"""
import resource
import sys
import time

import hnswlib
import numpy as np


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main():
    directory, dim, m, efc, efs, k = sys.argv[1:7]
    dim, m, efc, k = int(dim), int(m), int(efc), int(k)
    base = np.fromfile(f"{directory}/base.f32", dtype=np.float32).reshape(-1, dim)
    queries = np.fromfile(f"{directory}/queries.f32", dtype=np.float32).reshape(-1, dim)
    truth = np.fromfile(f"{directory}/truth.f32", dtype=np.float32).reshape(-1, k).astype(np.int64)
    n = base.shape[0]

    before = rss_bytes()
    started = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=n, M=m, ef_construction=efc, random_seed=100)
    # Built on both cores, as Soko's bulk build is; searched on one.
    index.set_num_threads(2)
    index.add_items(base, np.arange(n))
    build = time.perf_counter() - started
    per_vector = (rss_bytes() - before) / n
    print(f"hnswlib build: {build:.1f} s on 2 threads, RSS {per_vector:.0f} B/vector")
    index.set_num_threads(1)

    for ef in [int(e) for e in efs.split(",")]:
        index.set_ef(ef)
        latencies = []
        found = np.empty((len(queries), k), dtype=np.int64)
        started = time.perf_counter()
        for i, q in enumerate(queries):
            t = time.perf_counter()
            labels, _ = index.knn_query(q, k=k)
            latencies.append(time.perf_counter() - t)
            found[i] = labels[0]
        # Throughput from one batch call on one thread, so Python's per-call overhead does not
        # count against hnswlib; the per-call loop above gives the latencies.
        # Best of three, as for Soko.
        elapsed = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            index.knn_query(queries, k=k, num_threads=1)
            elapsed = min(elapsed, time.perf_counter() - started)
        hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth))
        latencies.sort()
        p50 = latencies[int(len(latencies) * 0.5) - 1] * 1e6
        p99 = latencies[max(int(np.ceil(len(latencies) * 0.99)) - 1, 0)] * 1e6
        print(
            f"hnswlib ef={ef} recall={hits / (len(queries) * k):.4f} qps={len(queries) / elapsed:.1f} "
            f"p50={p50:.1f}µs p99={p99:.1f}µs"
        )


if __name__ == "__main__":
    main()
