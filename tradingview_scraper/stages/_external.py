"""External sleeves: the step that reads a strategy's own returns and holdings files into the sleeve interface."""

from __future__ import annotations

import os

from ..errors import DataError
from ..run import RunContext
from ._common import Files, _named, _stage


def run_external_sleeve(ctx: RunContext, node_path: str, *, input: Files, output: Files, log: str | None = None) -> None:
    """Write external sleeve ``node_path``'s artifacts from its files (:func:`external.external_sleeve`).

    ``input`` names ``returns`` (the stream's file), ``holdings`` (one book per risk profile,
    in the plan's order; the same file may repeat) and, when the sleeve gives one, ``prices``; ``output`` is named as the ``sleeve`` rule's
    (``returns``, ``health``, ``sign_test``, ``provenance``, ``weights`` per risk profile).

    Raises
    ------
    DataError
        A file is missing or a row is refused: one line naming the sleeve, the file and the row.
    """
    from .. import audit
    from ..external import external_sleeve
    from ..layout import write_json, write_parquet

    spec, files, out = ctx.spec(node_path), _named(input), _named(output)
    profiles = ctx.plan.risk_profiles
    holdings = files["holdings"] if isinstance(files["holdings"], list) else [files["holdings"]] * len(profiles)
    prices = files.get("prices") or None  # issue 24: the sleeve's own price table, when it gives one
    read = list(dict.fromkeys(os.path.abspath(f) for f in [files["returns"], *holdings, *([prices] if prices else [])]))
    outputs = [out[k] for k in ("returns", "health", "sign_test", "provenance")] + list(out["weights"])
    params = {"sleeve": spec.sleeve_id, "external": spec.config["external"]}
    with _stage(ctx, "external_sleeve", node_path, log, params, read, outputs):
        digests = {f: audit.file_sha256(f) for f in read}
        try:
            result = external_sleeve(spec, profiles, ctx.run_id, files["returns"], holdings, digests, prices)
        except DataError as exc:
            raise DataError(f"{spec.label}: {exc}") from None
        for path, p in zip(out["weights"], profiles, strict=True):
            write_json(path, result["weights"][p])
        for key in ("health", "sign_test", "provenance"):
            write_json(out[key], result[key])
        write_parquet(out["returns"], result["returns"])  # last: the file the meta layer's DAG waits on
