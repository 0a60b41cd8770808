"""Command-line front end shared by scripts/run_meta_pipeline.py and run_production_pipeline.py."""

from __future__ import annotations

import argparse
import sys

from ..errors import ConfigError, PipelineError


class _OneLineParser(argparse.ArgumentParser):
    """argparse that reports bad usage in one line (and exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


#: The options :class:`~.pipeline.MetaPipeline` takes as the command line gives them.
_AS_GIVEN = ("profiles", "execute_sleeves", "run_id", "manifest", "cores", "dry_run", "ray_address", "ray_token_path",
             "ray_num_cpus", "runs_root", "previous_run", "holdings")  # fmt: skip


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = _OneLineParser(prog=prog, description=description)
    p.add_argument("--profile", required=True, help="meta profile of the manifest (e.g. meta_demo)")
    p.add_argument("--run-id", help="run directory name under data/runs (default: generated, time-sortable)")
    p.add_argument("--profiles", help="risk profiles, comma-separated (default: the profile's own list)")
    p.add_argument("--execute-sleeves", action="store_true", help="recompute every sleeve, pinned ones included")
    p.add_argument("--manifest", default="config/manifest.json", help="manifest path (default: %(default)s)")
    p.add_argument("--cores", type=int, default=2, help="cores for the scheduler (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="list the jobs without running them")
    p.add_argument("--no-ray", action="store_true", help="compute sleeves sequentially in-process (debugging)")
    p.add_argument("--ray-address", help="existing Ray cluster to use (default: RAY_ADDRESS or a private cluster)")
    p.add_argument("--ray-token-path", help="token file of the cluster at --ray-address (default: RAY_AUTH_TOKEN_PATH)")
    p.add_argument("--ray-num-cpus", type=int, help="CPUs of the private Ray cluster (default and maximum: all cores)")
    p.add_argument("--runs-root", default="data/runs", help="directory of run directories (default: %(default)s)")
    p.add_argument(
        "--previous-run", metavar="RUN_ID",
        help="rebalance from this earlier run's weights (report shows the changes); 'latest': the newest finished run of the profile",
    )  # fmt: skip
    p.add_argument("--holdings", metavar="FILE", help="rebalance from this book: CSV or JSON of symbol, direction, weight")
    p.add_argument("--no-reuse", action="store_true", help="recompute every job: take nothing from earlier runs' node store")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--verbose", action="store_true", help="show Snakemake's full job log instead of the progress lines")
    out.add_argument("--quiet", action="store_true", help="no progress lines: only the final line (or the error)")
    return p


def main(argv: list[str] | None, *, prog: str, require_meta: bool) -> int:
    """Parse ``argv``, run the canonical pipeline, print where the run went; return an exit code.

    Exit codes: 0 success, 2 configuration or usage error (nothing ran), 1 a stage failed,
    130 Ctrl-C (SIGINT), 143 SIGTERM: both stop the same way (the running tasks cancelled,
    the run's cluster stopped, a resume hint, no traceback).
    """
    from ..manifest import is_meta_profile, load_manifest
    from ..owner import terminated
    from .pipeline import MetaPipeline

    desc = "Run the canonical meta-portfolio pipeline (workflow/Snakefile) for one profile."
    args = build_parser(prog, desc).parse_args(argv)
    try:
        if require_meta:
            manifest, _ = load_manifest(args.manifest)
            if args.profile in manifest["profiles"] and not is_meta_profile(manifest, args.profile):
                raise ConfigError(
                    f"profile {args.profile!r} is atomic, not a meta profile; "
                    "run it with scripts/run_production_pipeline.py"
                )
        pipeline = MetaPipeline(
            args.profile,
            **{name: getattr(args, name) for name in _AS_GIVEN},
            ray=not args.no_ray,
            quiet=not args.verbose,
            reuse=not args.no_reuse,
            progress=None if (args.quiet or args.verbose or args.dry_run) else sys.stdout,
        )
    except PipelineError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(f"run id: {pipeline.run_id}  (run directory {pipeline.run_dir})", flush=True)
        if args.previous_run == "latest":
            print(f"previous run: {pipeline.previous_run} (the newest finished run of {args.profile})", flush=True)
    try:
        result = pipeline.execute()
    except KeyboardInterrupt:
        how = "terminated (SIGTERM)" if terminated() else "interrupted"
        print(f"{prog}: {how}; rerun the same command to resume run {pipeline.run_id}", file=sys.stderr)
        return 143 if terminated() else 130
    except PipelineError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    if pipeline.dry_run:
        for job in result.jobs:
            print(f"  {job.rule:<28} {' '.join(job.outputs)}")
        print(f"dry run: {len(result.jobs)} jobs scheduled, nothing executed")
    else:
        root = pipeline.plan.root
        print(f"done: {result.run_dir}" + (f"  (report: {result.run_dir / 'report.html'})" if root.is_meta else ""))
    return 0
