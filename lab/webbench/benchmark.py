"""``python -m lab.webbench``: the web app's budgets (album page p95 ≤ 150 ms, web overhead per
upload ≤ 200 ms), measured on a world of its own.

1. **Album page** with ``--photos`` finished photos (500): server time of ``--requests`` (60)
   GETs through Django's test Client, logged in, after a warm-up; p50/p95/max, and the SQL
   queries per request compared with an album of 5 photos (they must not grow with the photos).
2. **Upload → "done"** on the real stack (uvicorn + ``celery worker --concurrency 1``, both
   children of this process): ``--uploads`` (10) uploads of tests/data/person_a_2.jpg after two
   warm-ups, one at a time, timed from the start of the POST to the "done" message on the
   page's websocket; minus the cipher's own time on the same bytes in this warm process.
3. **Photos per minute**: ``--throughput-photos`` (20) photos of tests/data uploaded back to back,
   from the first upload to the last "done", with 1 and then 2 worker processes.

The world: a temporary VEIL_VAR_DIR (SQLite, media), or a throwaway Postgres database when
DATABASE_URL is set; Redis database ``--redis-db`` (13), flushed before and after; a fixed
transit key; DEBUG off. Everything is removed, and every child stopped, on the way out, also
on errors and Ctrl-C. Benchmarks print; they do not assert.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from lab.report import command_line, markdown_table, ms, save_report

from .stats import log
from .world import BenchError, Stack, bench_world

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
LATENCY_PHOTO = DATA / "person_a_2.jpg"
BUDGETS = {"page_p95_s": 0.150, "overhead_s": 0.200}
PARTS = ("page", "latency", "throughput")


def run_benchmark(
    *,
    out: Path | None = None,
    photos: int = 500,
    requests: int = 60,
    uploads: int = 10,
    throughput_photos: int = 20,
    parts: tuple[str, ...] = PARTS,
    redis_db: int = 13,
) -> dict[str, Any]:
    """Measure the chosen parts; optionally write the Markdown report to ``out``; the numbers as a dict."""
    live_parts = {"latency", "throughput"} & set(parts)
    result: dict[str, Any] = {"parts": list(parts), "load_average_before": _load()}
    with bench_world(redis_db=redis_db if live_parts else None) as world, contextlib.ExitStack() as cleanup:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        cleanup.callback(connections.close_all)  # before the throwaway database is dropped
        log(f"migrating the {world.database} database (VEIL_VAR_DIR {world.var_dir})")
        call_command("migrate", interactive=False, verbosity=0)

        from django.contrib.auth.models import User

        from cipher_worker import api as cipher_api
        from cipher_worker import keys

        from . import live, page

        owner = User.objects.create_user("bench-owner")  # logged in by session, no password needed
        log(f"loading the pipeline; anonymizing {LATENCY_PHOTO.name} for the seeded rows")
        sample = cipher_api.anonymize_photo(LATENCY_PHOTO.read_bytes(), keys.generate_album_keypair()[1])
        result.update(
            database=world.database,
            django=django.get_version(),
            python=platform.python_version(),
            cpus=os.cpu_count(),
            codec=cipher_api.get_pipeline().codec.id,
            sample=f"{LATENCY_PHOTO.name} ({sample.size[0]}×{sample.size[1]}, {len(sample.faces)} face)",
        )
        if "page" in parts:
            result["page"] = page.measure_album_page(owner, sample, photos=photos, requests=requests)
        if live_parts:
            with Stack(world.var_dir / "logs") as stack:
                result["live"] = live.measure_live(
                    owner,
                    stack,
                    photo=LATENCY_PHOTO,
                    mix=sorted(DATA.glob("*.jpg")),
                    uploads=uploads,
                    throughput_photos=throughput_photos,
                    parts=live_parts,
                    page_album_id=result["page"]["album_id"] if "page" in result else None,
                    page_requests=max(10, requests // 3),
                )
    result["load_average_after"] = _load()
    result["ok"] = _verdicts(result)
    result["rows"] = rows(result)
    save_report(result, out, markdown_report, log)
    return result


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _verdicts(r: dict[str, Any]) -> dict[str, bool]:
    ok: dict[str, bool] = {}
    if "page" in r:
        ok["page_p95"] = r["page"]["server_s"]["p95"] <= BUDGETS["page_p95_s"]
        ok["page_queries_constant"] = r["page"]["queries_constant"]
    if "latency" in r.get("live", {}):
        ok["upload_overhead"] = r["live"]["latency"]["overhead_s"]["p50"] <= BUDGETS["overhead_s"]
    return ok


# --- reporting ---------------------------------------------------------------------------


def _spread(s: dict[str, float]) -> str:
    return f"{ms(s['p50'])} (p95 {ms(s['p95'])})"


def _threads(count: float) -> str:
    return "1 torch thread" if count == 1 else f"{count:.0f} torch threads"


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def rows(r: dict[str, Any]) -> list[list[str]]:
    """The table: what | measured | budget | ok."""
    out: list[list[str]] = []
    ok = r["ok"]
    if "page" in r:
        p = r["page"]
        s = p["server_s"]
        out.append(
            [
                f"album page, {p['photos']} photos: server time p95 ({p['requests']} requests)",
                f"{ms(s['p95'])} (p50 {ms(s['p50'])}, max {ms(s['max'])})",
                f"≤ {ms(BUDGETS['page_p95_s'])}",
                _yes(ok["page_p95"]),
            ]
        )
        growth = "the same: it does not grow with the photos" if p["queries_constant"] else "it GROWS with the photos"
        out.append(
            [
                "album page: SQL queries per request",
                f"{p['queries']} with {p['photos']} photos, {p['queries_small_album']} with "
                f"{p['small_album_photos']}: {growth}",
                "constant",
                _yes(ok["page_queries_constant"]),
            ]
        )
        out += [
            [
                f"· loading the {p['photos']} photo rows as the page does (all columns; "
                f"envelope {p['envelope_bytes'] / 1024:.0f} KiB each)",
                ms(p["rows_all_columns_s"]),
                "—",
                "—",
            ],
            ["· the same rows without `envelope` (`defer`)", ms(p["rows_without_envelope_s"]), "—", "—"],
            [
                "· the whole page when the rows hold no envelope, p50 (p95)",
                _spread(p["server_without_envelopes_s"]),
                "—",
                "—",
            ],
            ["· page size", f"{p['html_bytes'] / 1024:.0f} KiB of HTML", "—", "—"],
        ]
    live = r.get("live", {})
    if "page_http_s" in live:
        out.append(["· the same page through uvicorn over HTTP, p50 (p95)", _spread(live["page_http_s"]), "—", "—"])
    if "latency" in live:
        lat = live["latency"]
        out.append(
            [
                f'upload → "done" beyond the cipher\'s own time, median (p95; {live["uploads"]} uploads)',
                _spread(lat["overhead_s"]),
                f"≤ {ms(BUDGETS['overhead_s'])}",
                _yes(ok["upload_overhead"]),
            ]
        )
        out += [
            [f'· upload → "done" on the websocket, wall time ({live["photo"]})', _spread(lat["wall_s"]), "—", "—"],
            [
                f"· the cipher's own time in the worker ({_threads(lat['torch_threads']['max'])})",
                _spread(lat["cipher_s"]),
                "—",
                "—",
            ],
            [
                "· the cipher on the same bytes in the bench process (cross-check)",
                _spread(lat["cipher_here_s"]),
                "—",
                "—",
            ],
            [
                "· the overhead if the cipher is timed in the bench process instead",
                _spread(lat["overhead_here_s"]),
                "—",
                "—",
            ],
            ["· the upload request (POST → 201)", _spread(lat["request_s"]), "—", "—"],
            ['· upload start → the worker reports "detecting"', _spread(lat["to_worker_s"]), "—", "—"],
            ['· in the worker, "detecting" → "done", beyond the cipher', _spread(lat["worker_extra_s"]), "—", "—"],
            [
                "· of which the task's progress callbacks (row update + status push per stage)",
                _spread(lat["progress_callbacks_s"]),
                "—",
                "—",
            ],
            [
                '· the cipher returns → "done" on the websocket (store, thumbnail, push)',
                _spread(lat["after_cipher_s"]),
                "—",
                "—",
            ],
            ["· status messages per photo on the websocket", f"{lat['messages']['p50']:.0f}", "—", "—"],
        ]
    for processes, run in sorted(live.get("throughput", {}).items(), reverse=True):
        failed = f", {run['failed']:.0f} failed" if run["failed"] else ""
        out.append(
            [
                f"photos per minute, {processes} worker process{'es' if processes > 1 else ''} "
                f"({run['photos']} photos of tests/data)",
                f"{run['per_minute']:.0f} /min ({run['elapsed_s']:.1f} s{failed}); the cipher took "
                f"{ms(run['cipher_mean_s'])} a photo in the worker ({_threads(run['torch_threads'])} each), "
                f"which alone allows {run['cipher_bound_per_minute']:.0f} /min",
                "—",
                "—",
            ]
        )
    if "diagnosis" in live:
        d = live["diagnosis"]
        out += [
            ["· one status push from sync code (`send_status`)", ms(d["status_push_s"]), "—", "—"],
            ["· one Redis round trip (PING), for scale", ms(d["redis_ping_s"]), "—", "—"],
            ["· transit: seal + SET, GET + open, DEL of one upload", ms(d["transit_round_trip_s"]), "—", "—"],
            ["· thumbnail of the anonymized photo", ms(d["thumbnail_s"]), "—", "—"],
        ]
    return out


def markdown_report(r: dict[str, Any]) -> str:
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return "\n".join(
        [
            "# Veil web app benchmark",
            "",
            f"Produced by `{command_line()}` on {now}: {r['database']}, Django {r['django']}, Python {r['python']}, "
            f"{r['cpus']} CPUs, codec {r['codec']}; load average {r['load_average_before']} before, "
            f"{r['load_average_after']} after. How each number is measured: `lab/webbench/benchmark.py`.",
            "",
            markdown_table(["what", "measured", "budget", "ok"], r["rows"]),
            "",
            *NOTES,
            "",
        ]
    )


NOTES = [
    "* **Album page**: rows made with `bulk_create`, each with the size, format, face count and recovery "
    "envelope of one real anonymized photo (the sample above); the page only links thumbnails, so no files. "
    "Server time is `Client.get` in the bench process, logged in, DEBUG off, after 5 warm-up requests; "
    "queries are counted with `CaptureQueriesContext` on one more request, for this album and one of 5 photos. "
    "The page without envelopes is a second album of as many rows whose `envelope` is empty.",
    '* **Upload → "done"**: the real stack (uvicorn, and `celery -A webapp worker --pool prefork --concurrency 1`) '
    "as children of the bench; a multipart POST with the session and CSRF cookies and `X-CSRFToken`, as "
    '`static/album.js` sends it; the clock runs from the start of the POST to the arrival of "done" on a '
    "websocket to /ws/updates/ opened with the session cookie and a same-origin `Origin`. The cipher's own time "
    "is measured inside the worker by `lab/webbench/probe.py` (loaded with `--include`): the wall time of "
    "`cipher_worker.api.anonymize_photo` minus the time spent in the task's progress callback, which is the "
    "web app's. The overhead is wall time minus that, per upload. As a cross-check the same bytes are "
    "anonymized in the warm bench process right after each upload, while the worker is idle.",
    "* **Photos per minute**: the six photos of tests/data in turn, uploaded one after another without waiting; "
    'from the start of the first upload to the last "done", after a warm-up of two photos per worker process.',
    "* Lines starting with · break a number down; they have no budget. On a shared machine the cipher's time "
    "varies most; the overhead is computed per upload, so it moves less.",
]


# --- command line ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab.webbench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the Markdown report here (e.g. docs/bench-web.md)")
    parser.add_argument("--photos", type=int, default=500, help="photos in the album page's album (500)")
    parser.add_argument("--requests", type=int, default=60, help="timed requests of the album page (60)")
    parser.add_argument("--uploads", type=int, default=10, help="timed uploads for upload → done (10)")
    parser.add_argument("--throughput-photos", type=int, default=20, help="photos per throughput run (20)")
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)} (all of them)"
    )
    parser.add_argument("--redis-db", type=int, default=13, help="the Redis database index the bench owns (13)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON instead of the table")
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so SIGTERM cleans up like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = set(parts) - set(PARTS)
    if unknown or not parts:
        print(f"bench: --parts takes {', '.join(PARTS)}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result = run_benchmark(
            out=args.out,
            photos=args.photos,
            requests=args.requests,
            uploads=args.uploads,
            throughput_photos=args.throughput_photos,
            parts=parts,
            redis_db=args.redis_db,
        )
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(markdown_table(["what", "measured", "budget", "ok"], result["rows"]))
    return 0
