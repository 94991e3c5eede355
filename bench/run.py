"""sockgate's benchmark: the reference nginx config, a tuned nginx, sockgate's nginx engine, its
built-in engine (1 and 2 workers), HAProxy and a direct connection, all in front of the same
backend, under the same workloads, interleaved over rounds; over TLS (HTTPS/1.1, HTTP/2) tuned
nginx and the built-in engine with one certificate; with `--baseline REF` also the built-in
engine of sockgate at an older commit, compiled, to compare the two builds.

    python bench/run.py [--quick] [--rounds N] [--only ROWS] [--workloads all|plain|tls|KEYS]
                        [--baseline REF] [--out bench/results] [--publish]

See bench/README.md for what each figure means and how far to trust it.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

import catalog
import targets as goals
import tls
from backends import start_backend
from baseline import Baseline, build_baseline
from catalog import METRIC_BY_KEY, Workload
from confs import TlsFiles, TlsListen
from machine import sockgate_commit
from procs import BenchError, Supervisor, free_ports, tree_mb
from proxies import OPTIONAL, ORDER, TLS_KEYS, Target, start_target
from report import Results, comparison, fmt_value, notes, table, write_all
from websockets.exceptions import WebSocketException
from workloads import Sample, Settings, sanity_check, warm_up, write_lua_scripts

REPO = Path(__file__).resolve().parents[1]
FD_LIMIT = 16384
MEASURE_ERRORS = (
    BenchError,
    OSError,
    subprocess.SubprocessError,
    TimeoutError,
    WebSocketException,
    ValueError,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="1 round of short runs (~2 min)")
    parser.add_argument("--rounds", type=int, help="rounds (default 5; --quick: 1)")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (default 3; --quick 2)")
    parser.add_argument(
        "--wrk-threads", type=int, default=min(2, os.cpu_count() or 1), help="wrk -t (default 2)"
    )
    parser.add_argument(
        "--only",
        help=f"comma-separated subset of: {','.join(ORDER)} "
        "(default: all; sg-base only with --baseline)",
    )
    parser.add_argument(
        "--workloads",
        metavar="LIST",
        help="comma-separated workloads and groups: all (default), plain, tls, or keys such as "
        f"{','.join(w.key for w in catalog.WORKLOADS if w.tls)}",
    )
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also run sockgate built-in at git commit-ish REF, compiled (row sg-base), and "
        "compare sg-builtin against it",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results", help="default bench/results"
    )
    parser.add_argument(
        "--publish", action="store_true", help="also write the chart to docs/bench.png"
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    args = parser.parse_args(argv)
    if args.only:
        unknown = set(args.only.split(",")) - set(ORDER)
        if unknown:
            parser.error(f"--only: unknown proxies {', '.join(sorted(unknown))}")
        if "sg-base" in args.only.split(",") and not args.baseline:
            parser.error("--only: sg-base needs --baseline REF (the commit to build)")
    try:
        args.chosen = catalog.select(args.workloads)
    except ValueError as exc:
        parser.error(f"--workloads: {exc}")
    if not args.chosen:
        parser.error("--workloads: none chosen")
    if any(w.tls for w in args.chosen) and shutil.which("h2load") is None:
        parser.error("the TLS workloads need h2load (apt-get install nghttp2-client)")
    return args


def target_keys(args: argparse.Namespace) -> list[str]:
    """The rows, in ORDER: `--only`'s, or all but the optional ones; `--baseline` adds
    sg-base (even to an `--only` without it: the baseline is built for that row)."""
    wanted = set(args.only.split(",")) if args.only else set(ORDER) - set(OPTIONAL)
    if args.baseline:
        wanted.add("sg-base")
    return [k for k in ORDER if k in wanted]


def settings_from(args: argparse.Namespace) -> Settings:
    quick = bool(args.quick)
    return Settings(
        rounds=max(1, args.rounds or (1 if quick else 5)),
        duration=max(1, args.duration or (2 if quick else 3)),
        warmup=1,
        wrk_threads=max(1, args.wrk_threads),
        downloads=2 if quick else 3,
        ws_messages=1000 if quick else 3000,
        sse_events=200 if quick else 500,
        sse_interval_ms=5.0 if quick else 4.0,
        idle_conns=1000,
    )


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def raise_fd_limit() -> None:
    """1,000 idle connections plus wrk's 256 need more than a default 1,024 descriptors; the
    children inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FD_LIMIT if hard == resource.RLIM_INFINITY else min(FD_LIMIT, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the cleanup in main()


def start_targets(
    sup: Supervisor,
    tmp: Path,
    keys: list[str],
    baseline: Baseline | None = None,
    files: TlsFiles | None = None,
) -> list[Target]:
    """Start the backend and every row; with `files` the rows in TLS_KEYS get an HTTPS
    listener too (on a port of its own), sanity-checked apart: a TLS failure leaves the row's
    plain figures."""
    ports = free_ports(2 * len(keys) + 2)
    tls_ports = ports[len(keys) + 2 :]
    say(f"backend: nginx + uvicorn app under {tmp}")
    import sockgate
    from sockgate import buildinfo

    say(f"sockgate: {buildinfo.build()} from {Path(sockgate.__file__).parent}")
    if baseline is not None and baseline.site is not None:
        say(f"sockgate at {baseline.ref}: {baseline.build} from {baseline.site / 'sockgate'}")
    backend = start_backend(sup, tmp, ports[0], ports[1])
    targets = []
    for key, port, tls_port in zip(keys, ports[2 : len(keys) + 2], tls_ports, strict=True):
        listen = TlsListen(tls_port, files) if files is not None and key in TLS_KEYS else None
        target = start_target(sup, tmp, key, port, backend, baseline, listen)
        if not target.na:
            try:
                sanity_check(target)
            except MEASURE_ERRORS as exc:
                target.na = f"n/a: failed the sanity check: {exc}"
        if target.has_tls:
            try:
                tls.sanity_check(target)
            except MEASURE_ERRORS as exc:
                target.tls_na = f"n/a: failed the TLS sanity check: {exc}"
        shown = target.na or f"127.0.0.1:{target.port}"
        if target.tls is not None and not target.na:
            shown += f", {target.tls_na or f'https://127.0.0.1:{target.tls.port}'}"
        elif target.tls_na:
            shown += f", TLS {target.tls_na}"
        say(f"  {target.label}: {shown}")
        targets.append(target)
    return targets


def run_one(
    results: Results,
    round_no: int,
    workload: Workload,
    target: Target,
    settings: Settings,
    scripts: dict[str, Path],
) -> None:
    if workload.tls and not target.has_tls:
        return  # n/a in the table
    try:
        sample = workload.run(target, settings, scripts)
    except MEASURE_ERRORS as exc:
        error = f"{type(exc).__name__}: {exc}"
        results.fail(round_no, workload.key, target, error)
        say(f"    {target.label:<38} FAILED {error}")
        return
    results.add(round_no, workload.key, target, sample)
    shown = ", ".join(
        f"{METRIC_BY_KEY[k].key} {fmt_value(v, METRIC_BY_KEY[k].unit)} {METRIC_BY_KEY[k].unit}"
        for k, v in sample.metrics.items()
    )
    warning = f"  ({sample.detail['warning']})" if "warning" in sample.detail else ""
    say(f"    {target.label:<38} {shown or '-'}{warning}")


def truncate_access_logs(targets: list[Target]) -> None:
    """Access logs grow by hundreds of MB over a bench; nginx and sockgate append, so cutting
    the files short is safe."""
    for target in targets:
        for log in target.access_logs:
            with contextlib.suppress(FileNotFoundError):
                os.truncate(log, 0)


def warm_up_all(
    targets: list[Target], chosen: list[Workload], settings: Settings, scripts: dict[str, Path]
) -> None:
    for target in targets:
        if any(not w.tls for w in chosen):
            warm_up(target, settings, scripts)
        if target.has_tls and any(w.tls for w in chosen):
            try:
                tls.warm_up(target, settings, scripts)
            except MEASURE_ERRORS as exc:
                target.tls_na = f"n/a: failed the TLS warm-up: {exc}"
                say(f"  {target.label}: TLS {target.tls_na}")


def measure(
    results: Results,
    targets: list[Target],
    chosen: list[Workload],
    settings: Settings,
    scripts: dict[str, Path],
) -> None:
    live = [t for t in targets if not t.na]
    warm_up_all(live, chosen, settings, scripts)
    for round_no in range(1, settings.rounds + 1):
        for workload in chosen:
            say(f"[round {round_no}/{settings.rounds}] {workload.title}")
            shift = (round_no - 1) % max(len(live), 1)
            for target in live[shift:] + live[:shift]:
                run_one(results, round_no, workload, target, settings, scripts)
        truncate_access_logs(live)
    for target in live:
        if target.measured_pid is not None:
            peak = Sample({"rss_peak": tree_mb(target.measured_pid, "VmHWM")})
            results.add(settings.rounds, "peak", target, peak)


def estimate_seconds(settings: Settings, chosen: list[Workload], targets: list[Target]) -> float:
    """Rough: each timed run its duration, the downloads, the SSE events and a little more."""
    sse = settings.sse_events * settings.sse_interval_ms / 1000
    fixed = {"dl64m": 1.5, "ws_echo": 1.0, "sse": sse, "idle": 3.0, "tls_64m": 3.0}
    total = 0.0
    for target in (t for t in targets if not t.na):
        ran = [w for w in chosen if target.has_tls or not w.tls]
        per_round = sum(settings.duration + 0.3 if w.timed else fixed.get(w.key, 1.0) for w in ran)
        total += settings.rounds * per_round + settings.warmup * 2 + 1
    return total


def prepare_baseline(ref: str, tmp: Path) -> Baseline:
    say(f"baseline: exporting {ref} and building its wheel compiled (a few minutes)")
    baseline = build_baseline(ref, REPO, tmp, tmp / "logs")
    if baseline.error:
        say(f"baseline: {baseline.ref} not built: {baseline.error}")
    else:
        say(f"baseline: {baseline.ref} = {baseline.short}, {baseline.build}, "
            f"built in {baseline.seconds / 60:.1f} min")  # fmt: skip
    return baseline


def bench(args: argparse.Namespace, tmp: Path, sup: Supervisor) -> Results:
    settings = settings_from(args)
    chosen: list[Workload] = args.chosen
    commit = sockgate_commit(REPO)
    keys = target_keys(args)
    baseline = prepare_baseline(args.baseline, tmp) if "sg-base" in keys else None
    scripts = write_lua_scripts(tmp / "lua")
    wants_tls = any(w.tls for w in chosen) and any(k in TLS_KEYS for k in keys)
    files = tls.make_certs(tmp / "tls") if wants_tls else None
    targets = start_targets(sup, tmp, keys, baseline, files)
    live = sum(1 for t in targets if not t.na)
    minutes = estimate_seconds(settings, chosen, targets) / 60
    say(f"about {minutes:.1f} min for {live} targets, {len(chosen)} workloads")
    results = Results(
        targets, settings, metrics=catalog.metrics_of(chosen), baseline=baseline, commit=commit
    )
    measure(results, targets, chosen, settings, scripts)
    return results


def compile_sockgate() -> None:
    """Byte-compile sockgate as pip does at install: with PYTHONDONTWRITEBYTECODE (or a
    read-only checkout) every start would compile it again, and the RSS measured would hold the
    compiler's leftovers (about 3 MB), not what an installed sockgate uses."""
    import sockgate

    compileall.compile_dir(Path(sockgate.__file__).parent, quiet=1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None or shutil.which("curl") is None:
        say("bench: needs wrk and curl (apt-get install wrk curl)")
        return 2
    raise_fd_limit()
    compile_sockgate()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="sgb-", dir="/tmp"))
    sup = Supervisor(tmp / "logs")
    try:
        results = bench(args, tmp, sup)
    except BenchError as exc:
        say(f"bench: {exc}")
        return 2
    finally:
        sup.stop_all()
        if args.keep_tmp:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(table(results))
    if compared := comparison(results, results.commit):
        print("\n" + compared)
    if reached := goals.lines(results):
        print("\nissue 20's targets (ratio to tuned nginx over TLS):\n" + "\n".join(reached))
    if extra := notes(results):
        print("\n" + extra)
    written = write_all(results, args.out, REPO, args.publish, goals.markdown(results),
                        {"tls_targets": goals.assess(results)})  # fmt: skip
    for path in written:
        say(f"wrote {path}")
    say(f"done in {(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started is stopped", file=sys.stderr)
        sys.exit(130)
