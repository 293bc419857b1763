#!/usr/bin/env python3
"""Export the JSON Schemas of every MQTT payload to docs/mqtt/<name>.schema.json.

Usage: scripts/export_mqtt_schemas.py [--check] [--out DIR]
``--check`` exits 1 (listing the files) when the committed schemas are out of date.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.sinks.mqtt.schemas import SCHEMA_VERSION, schema_catalog  # noqa: E402

__all__ = ["main", "render"]


def render() -> dict[str, str]:
    """File name -> JSON text of each schema (stable formatting, trailing newline)."""
    out: dict[str, str] = {}
    for stem, model in schema_catalog().items():
        schema = model.model_json_schema(by_alias=True)
        schema["$id"] = f"https://edge-guard.invalid/mqtt/v{SCHEMA_VERSION}/{stem}.schema.json"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        out[f"{stem}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--check", action="store_true", help="fail if the files differ instead of writing them")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "mqtt")
    args = ap.parse_args(argv)
    files = render()
    stale = [n for n, text in files.items()
             if not (args.out / n).is_file() or (args.out / n).read_text(encoding="utf-8") != text]
    extra = sorted(p.name for p in args.out.glob("*.schema.json") if p.name not in files) if args.out.is_dir() else []
    if args.check:
        for n in stale + extra:
            sys.stderr.write(f"out of date: {args.out / n} (run scripts/export_mqtt_schemas.py)\n")
        return 1 if stale or extra else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for n in stale:
        (args.out / n).write_text(files[n], encoding="utf-8")
    for n in extra:
        (args.out / n).unlink()
    sys.stdout.write(f"{len(files)} schemas in {args.out} ({len(stale)} updated, {len(extra)} removed)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
