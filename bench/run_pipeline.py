"""One pipeline run through the canonical runner, timed in-process; prints wall time and jobs as JSON.

    python bench/run_pipeline.py --manifest M --profile P --run-id R --runs-root D [--no-ray] [--dry-run] [--reuse]

A benchmark times computation: a run takes nothing from earlier runs' node store unless
``--reuse`` is given (issue 25: a new run id otherwise reuses what an earlier one computed).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

from common import ClusterStart, cores


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--profile", required=True)
    p.add_argument("--run-id", required=True)
    p.add_argument("--runs-root", required=True)
    p.add_argument("--profiles")
    p.add_argument("--cores", type=int, default=cores())
    p.add_argument("--no-ray", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--reuse", action="store_true", help="take unchanged jobs from earlier runs (default: compute)")
    args = p.parse_args(argv)
    started = time.time()
    t0 = time.perf_counter()
    from tradingview_scraper.orchestration.pipeline import MetaPipeline

    t1 = time.perf_counter()
    with ClusterStart() as cluster:
        result = MetaPipeline(
            args.profile,
            profiles=args.profiles,
            run_id=args.run_id,
            manifest=args.manifest,
            cores=args.cores,
            ray=not args.no_ray,
            runs_root=args.runs_root,
            dry_run=args.dry_run,
            reuse=args.reuse,
        ).execute()
    t2 = time.perf_counter()
    jobs = [{"rule": j.rule, "wildcards": j.wildcards} for j in result.jobs]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = {"import_s": t1 - t0, "runner_s": t2 - t1, "started": started, "ended": time.time(),
           "driver_cpu_s": usage.ru_utime + usage.ru_stime}
    out["ray_head_start_s"] = cluster.start_s  # the private cluster's start, connection included
    out["ray_connect_s"] = cluster.connect_s  # joining a running cluster
    out["ray_head_stop_s"] = cluster.stop_s  # stopping the private cluster
    print(json.dumps({**out, "run_dir": str(result.run_dir), "jobs": jobs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
