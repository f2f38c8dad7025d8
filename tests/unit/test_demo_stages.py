"""The demo's staged output: one stamped line per step start and end in a log, live bars in a terminal."""

from __future__ import annotations

import io
import re
import threading

import pytest
from rich.console import Console

from harness.demo.stages import StageLog

STAMP = re.compile(r"^\[\s*\d+\.\d s\] ")


def _log_console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=False, width=200), buf


def test_a_log_gets_one_stamped_line_per_start_and_end_and_no_redraws() -> None:
    console, buf = _log_console()
    with StageLog(console) as stages:
        assert not stages.live and stages.progress is None
        with stages.step("board runtime for x86_64") as st:
            st.update("building", advance=1)  # no line per update in a log
            st.cached("/cache/runtime/x86_64-abc")
        with stages.step("tuning on local (2 trials)", total=2) as st:
            stages.line("trial 0: accuracy 94.0%")
            st.done("2 of 2 trials measured")
        with stages.step("report") as st:
            st.skipped("no feasible trial")
        stages.headline("dense demo-gpt2 on local: latency 1.00 ms")
    lines = buf.getvalue().splitlines()
    assert all(STAMP.match(line) for line in lines), lines
    body = [STAMP.sub("", line) for line in lines]
    assert body[0] == "board runtime for x86_64 ..."
    assert re.fullmatch(
        r"board runtime for x86_64 — cached: /cache/runtime/x86_64-abc \(\d+\.\d s\)", body[1]
    )
    assert body[2] == "tuning on local (2 trials) ..." and body[3] == "trial 0: accuracy 94.0%"
    assert body[4].startswith("tuning on local (2 trials) — done: 2 of 2 trials measured (")
    assert body[6].startswith("report — skipped: no feasible trial")
    assert body[7] == "dense demo-gpt2 on local: latency 1.00 ms"
    assert "\r" not in buf.getvalue() and "\x1b" not in buf.getvalue()


def test_a_failed_step_says_so_and_the_error_propagates() -> None:
    console, buf = _log_console()
    with pytest.raises(RuntimeError, match="cmake exploded"), StageLog(console) as stages:
        with stages.step("building [x86_64]"):  # markup-like text is printed as is
            raise RuntimeError("cmake exploded")
    assert "building [x86_64] — failed: cmake exploded" in buf.getvalue()


def test_steps_in_threads_each_get_their_lines() -> None:
    console, buf = _log_console()
    with StageLog(console) as stages:

        def work(i: int) -> None:
            with stages.step(f"step {i}") as st:
                st.done(f"result {i}")

        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    text = buf.getvalue()
    for i in range(6):
        assert f"step {i} — done: result {i}" in text
    assert all(STAMP.match(line) for line in text.splitlines())


def test_a_terminal_gets_live_bars_and_keeps_the_finished_lines() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    with StageLog(console) as stages:
        assert stages.live and stages.progress is not None
        with stages.step("rootfs image", total=1.0) as st:
            st.update("unpacking", completed=0.5)
            assert stages.progress.tasks[0].completed == 0.5
            st.done("built")
        assert not stages.progress.tasks  # finished steps leave the live area
    assert "rootfs image" in buf.getvalue() and "built" in buf.getvalue()
