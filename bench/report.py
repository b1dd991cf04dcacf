"""The results as markdown: the summary next to the anchors, the targets, the width steps."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.targets import label, verdicts

# Anchors: the seed (Express) and a naive Flask port, measured with these same
# phases and the seed's algorithm (a look every 1 s); lag p50 / p99 in ms, calls per run (per run-second).
ANCHORS = {
    "seed (Express)": {
        "lag": "477-479 / 995-1001",
        "calls": "10.7 (1.29)",
        "overhead": "+1.7 / +1.81",
        "width": "2,000 at 179-207 MB",
        "gave": "3,000-4,000: event loop busy, listen queue overflow, resets",
    },
    "naive Flask 1x64 gthread": {
        "lag": "454 / 998",
        "calls": "10.6 (1.28)",
        "overhead": "+3.8",
        "width": "64 at 116 MB",
        "gave": "100: every thread busy, the rest queued",
    },
    "before: 2 gthread x 32, as shipped": {
        "lag": "481 / 981",
        "calls": "10.46 (1.26)",
        "overhead": "+6.34",
        "width": "< 100",
        "gave": "503 from ~50 waiting runs",
    },
    "before: 1 gevent worker": {
        "lag": "",
        "calls": "",
        "overhead": "+6.26",
        "width": "250 at 148 MB",
        "gave": "500: one core saturated",
    },
}
START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"


def _fmt(value, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:g}{unit}"


def _seconds(ms: dict) -> str:
    if ms.get("p50") is None:
        return "n/a"
    return f"{ms['p50'] / 1000:.2f} / {ms['p99'] / 1000:.2f}"


def _width_cell(m: dict, key: str = "width") -> tuple[str, str]:
    width = m.get(key)
    if not width:
        return "not measured", ""
    steps = {s["n"]: s for s in width["steps"]}
    reached = width["reached"]
    if reached:
        mem = steps[reached]["processes"]["backend"]
        cell = f"{reached:,} at {mem['pss_peak_mb']:.0f} MB PSS ({mem['rss_peak_mb']:.0f} MB RSS)"
    else:
        cell = "none of the steps"
    last = width["steps"][-1]
    gave = f"{last['n']:,}: {'; '.join(width['gave'])}" if width["gave"] else "nothing, up to the last step"
    return cell, gave


def summary_table(results: dict) -> str:
    """One column per measured strategy and worker, then the anchors."""
    measured = results["measured"]
    head = ["", *(label(m) for m in measured), *(f"anchor: {a}" for a in ANCHORS)]
    rows = {key: [] for key in ("lag", "tail", "calls", "overhead", "width", "gave", "width_full", "gave_full")}
    for m in measured:
        lag = m.get("lag", {}).get("lag_ms", {})
        calls = m.get("lag", {}).get("calls", {})
        rows["lag"].append(f"{_fmt(lag.get('p50'))} / {_fmt(lag.get('p99'))}")
        rows["tail"].append(f"{_fmt(lag.get('p95'))} / {_fmt(lag.get('max'))}")
        rows["calls"].append(f"{_fmt(calls.get('run_calls_per_run'))} ({_fmt(calls.get('run_calls_per_run_second'))})")
        over = m.get("overhead", {}).get("p50_difference_ms")
        rows["overhead"].append("n/a" if over is None else f"{over:+.1f}")
        rows["width"].append(_width_cell(m)[0])
        rows["gave"].append(_width_cell(m)[1])
        rows["width_full"].append(_width_cell(m, "width_full")[0])
        rows["gave_full"].append(_width_cell(m, "width_full")[1])
    for anchor in ANCHORS.values():
        rows["lag"].append(anchor["lag"])
        rows["tail"].append("")
        rows["calls"].append(anchor["calls"])
        rows["overhead"].append(anchor["overhead"])
        rows["width"].append(anchor["width"])
        rows["gave"].append(anchor["gave"])
        rows["width_full"].append("")
        rows["gave_full"].append("")
    names = {
        "lag": "lag p50 / p99 (ms)",
        "tail": "lag p95 / max (ms)",
        "calls": "upstream calls per run (per run-second)",
        "overhead": "pass-through overhead p50 (ms)",
        "width": "width: simultaneous waiting runs (threads made before the step)",
        "gave": "what gave next",
        "width_full": "width, the full flow inside the step",
        "gave_full": "what gave next (full flow)",
    }
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [f"| {names[key]} | " + " | ".join(cells) + " |" for key, cells in rows.items()]
    return "\n".join(lines)


def _ms(value) -> str:
    return "n/a" if value is None else f"{value:g}"


def width_table(results: dict) -> str:
    """Every width step of every strategy, worker and variant, with the backend's CPU costs."""
    lines = [
        "| worker | strategy | variant | N | ok | waiting at once | lag p50 / p99 / max (ms) "
        "| backend PSS / RSS peak (MB) | KB per run | backend CPU avg / peak | workers' CPU (s) "
        "| CPU per POST .../runs (ms) | CPU per poll (ms) | CPU per waiting run-second (ms) | polls/s "
        "| upstream CPU | client CPU | other CPU | gave |",
        "|" + "---|" * 19,
    ]
    for m in results["measured"]:
        for key in ("width", "width_full"):
            for s in m.get(key, {}).get("steps", []):
                p, lag, cpu = s["processes"], s["lag_ms"], s.get("cpu", {})
                workers = " / ".join(f"{v:g}" for v in p["backend"].get("workers_cpu_seconds", []))
                lines.append(
                    f"| {m['worker']} | {m['strategy']} | {s.get('variant', 'full')} | {s['n']:,} | {s['succeeded']:,} "
                    f"| {s['peak_waiting_upstream']:,} "
                    f"| {_fmt(lag.get('p50'))} / {_fmt(lag.get('p99'))} / {_fmt(lag.get('max'))} "
                    f"| {p['backend']['pss_peak_mb']:.0f} / {p['backend']['rss_peak_mb']:.0f} "
                    f"| {s['kb_per_waiting_run']:g} "
                    f"| {p['backend']['cpu_percent_avg']:.0f}% / {p['backend']['cpu_percent_peak']:.0f}% | {workers} "
                    f"| {_ms(cpu.get('ms_per_run'))} | {_ms(cpu.get('ms_per_poll'))} "
                    f"| {_ms(cpu.get('ms_per_waiting_run_second'))} | {_ms(cpu.get('polls_per_second'))} "
                    f"| {p['fake']['cpu_percent_avg']:.0f}% | {p['client']['cpu_percent_avg']:.0f}% "
                    f"| {p['others']['cpu_percent_avg']:.0f}% "
                    f"| {'; '.join(s['gave']) or '-'} |"
                )
    return "\n".join(lines)


def streamed_table(results: dict) -> str:
    """For streamed answers (`--client stream`): the lag phase and each width step, from the request
    to the first byte and to the first delta, and from the upstream's first word to the first delta."""
    lines = [
        "| strategy | phase | N | ok | first byte p50 / p99 (ms) | first delta p50 / p99 (ms) "
        "| upstream's first word to first delta p50 / p99 (ms) | lag to thread.run.completed p50 / p99 (ms) |",
        "|" + "---|" * 8,
    ]
    for m in results["measured"]:
        phases = [("lag", m["lag"]["runs"], m["lag"])] if "lag" in m else []
        for key in ("width", "width_full"):
            phases += [(f"{key} {s['variant']}", s["n"], s) for s in m.get(key, {}).get("steps", [])]
        for phase, n, p in phases:
            st, lag = p.get("streamed", {}), p["lag_ms"]
            cells = [
                f"{_fmt(st.get(k, {}).get('p50'))} / {_fmt(st.get(k, {}).get('p99'))}"
                for k in ("first_byte_ms", "first_delta_ms", "first_text_lag_ms")
            ]
            lines.append(
                f"| {m['strategy']} | {phase} | {n:,} | {p['succeeded']:,} | {' | '.join(cells)} "
                f"| {_fmt(lag.get('p50'))} / {_fmt(lag.get('p99'))} |"
            )
    return "\n".join(lines)


def _fake_server(kind: str) -> str:
    return "werkzeug (no keep-alive)" if kind == "werkzeug" else f"gunicorn -k {kind}, one worker"


def _backend(plan: dict, results: dict) -> str:
    kinds = sorted({m["worker"] for m in results["measured"]})
    if kinds == ["shipped"]:
        return "gunicorn -c gunicorn.conf.py as shipped (no tuning variables, no options)"
    return (
        f"{', '.join(kinds)}; the experiments: gunicorn, {plan.get('backend_workers', 1)} worker(s) "
        f"({plan['threads']} threads for gthread)"
    )


def _preamble(results: dict) -> list[str]:
    mach, plan, code = results["machine"], results["plan"], results.get("code", {})
    return [
        f"Measured {results['date']}, {results['mode']} mode, in {results.get('wall_s', 0) / 60:.0f} min, on "
        f"{mach['nproc']} x {mach['cpu_model']}, {mach['memory_gib']} GiB, Linux {mach['kernel']}, "
        f"Python {mach['python']}.",
        f"Backend: {_backend(plan, results)}; AUTH_MODE=token, per-user limits on (not reached), default logging. "
        f"Fake upstream: {_fake_server(results['fake_server'])}, its own process.",
        f"Lag: {plan['lag_runs']} runs of {plan['lag_min_s']:g}-{plan['lag_max_s']:g} s, "
        f"{plan['lag_concurrency']} at a time.",
        f"Width: runs of {plan['width_min_s']:g}-{plan['width_max_s']:g} s launched over {plan['width_launch_s']:g} s.",
        f"Overhead: {plan['overhead_calls']} alternating calls.",
        f"Code: {code.get('commit') or 'unknown commit'}"
        + (f" plus uncommitted changes to {', '.join(code['uncommitted'])}." if code.get("uncommitted") else "."),
        *(
            f"Not measured: {name} (the code under test does not accept it)."
            for name in results.get("skipped_strategies", [])
        ),
    ]


def markdown(results: dict) -> str:
    """The whole results section: machine, summary next to the anchors, targets, width steps."""
    return "\n".join(
        [
            " ".join(_preamble(results)),
            "",
            summary_table(results),
            "",
            "Targets:",
            "",
            *(f"- {line}" for line in verdicts(results)),
            "",
            "Width steps (CPU in % of one core, averaged over the step; a step gives at < 99% ok, p99 > 2 s, "
            "or < 95% waiting upstream at once). Variant prepared: each run's thread and message made before "
            "the step; full: inside it (its CPU per run is then the whole flow). CPU per poll and per waiting "
            "run-second, and per POST .../runs (creation to answer, without the wait): the backend's CPU in each "
            "0.5 s of the step fitted by least squares to the runs created, the answers sent and the "
            "run-seconds waited in it (bench/phases.py cpu_costs); polls/s: over the whole step:",
            "",
            width_table(results),
            "",
            *(
                [
                    'Streamed answers (the client sends `"stream": true` and reads the events to `[DONE]`):',
                    "",
                    streamed_table(results),
                    "",
                ]
                if any(m.get("client") == "stream" for m in results["measured"])
                else []
            ),
        ]
    )


def publish(results: dict, table: str, png: Path, docs: Path) -> None:
    """Put the table between the markers of docs/benchmarks.md and the plot at docs/benchmarks.png."""
    doc = docs / "benchmarks.md"
    text = doc.read_text() if doc.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text += f"\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{table}\n{END}{tail}")
    if png.exists():
        shutil.copyfile(png, docs / "benchmarks.png")
