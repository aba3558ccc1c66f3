"""The replay timeline as a person sees it: rendered by headless Chromium, screenshot checked.

Two real runs: `counter_unsafe` at a failing seed (faults, violations, the failure's nodes) and
the store's `partition_leader` (Raft leaders, client operations, messages). Each page is
written as `detsim replay --html` writes it, opened from a file:// URL (no network: the page is
self-contained), and screenshotted at 1400x900. The PNG is decoded here (zlib, no imaging
dependency) and checked to be
- not blank: many colours, a good share of non-white pixels;
- showing the lanes: the lane separators (their exact colour, spanning most of the plot's
  width) at the spacing the page lays lanes out with, one per lane;
- showing what the run had: the violation's red, the leader's gold, ok operations' green.
Skipped, saying why, when Chromium is not installed (scripts/install-system-deps.sh installs
Debian's `chromium`). The screenshots are kept under pytest's tmp dir for a person to look at.
"""

from __future__ import annotations

import itertools
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from detsim.campaign import runner, timeline
from detsim.campaign.catalogue import registry
from detsim.sim import artifact as artifact_mod
from detsim.sim.world import Simulation

CHROMIUM_TIMEOUT_S = 180.0
WINDOW = (1400, 900)
UNSAFE_SEED = 3  # counter_unsafe fails at this seed
STORE_SCENARIO, STORE_SEED = "partition_leader", 1

SEPARATOR_RGB = (0xD5, 0xDB, 0xE3)  # .lane-sep in the page's CSS
VIOLATION_RGB = (0xD6, 0x27, 0x28)
LEADER_RGB = (0xF2, 0xC1, 0x2E)
OK_RGB = (0x2C, 0xA0, 0x2C)


# --- a small PNG decoder (8-bit RGB/RGBA, non-interlaced: what Chromium writes) ---------------


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB bytes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, bytearray(), b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(bytes(idat))
    stride = width * bpp
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        row = _unfilter(raw[start], bytearray(raw[start + 1 : start + 1 + stride]), previous, bpp)
        previous = row
        rows.append(bytes(row) if bpp == 3 else bytes(b for i, b in enumerate(row) if i % 4 != 3))
    return width, height, rows


def _unfilter(kind: int, row: bytearray, prev: bytearray, bpp: int) -> bytearray:
    if kind == 0:
        return row
    if kind == 2:
        return bytearray((a + b) & 0xFF for a, b in zip(row, prev, strict=True))
    for i in range(len(row)):
        left = row[i - bpp] if i >= bpp else 0
        up = prev[i]
        if kind == 1:
            row[i] = (row[i] + left) & 0xFF
        elif kind == 3:
            row[i] = (row[i] + (left + up) // 2) & 0xFF
        else:  # 4: Paeth
            up_left = prev[i - bpp] if i >= bpp else 0
            p = left + up - up_left
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
            pred = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
            row[i] = (row[i] + pred) & 0xFF
    return row


def pixels(row: bytes) -> list[tuple[int, int, int]]:
    return [(row[i], row[i + 1], row[i + 2]) for i in range(0, len(row), 3)]


def near(a: tuple[int, int, int], b: tuple[int, int, int], tolerance: int = 6) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


# --- rendering ---------------------------------------------------------------------------------


def screenshot(page_html: str, where: Path) -> tuple[int, int, list[bytes]]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        reason = "chromium is not installed (scripts/install-system-deps.sh installs it)"
        print(reason)
        pytest.skip(reason)
    page = where / "timeline.html"
    page.write_text(page_html, encoding="utf-8")
    png = where / "timeline.png"
    profile = where / "chromium-profile"
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--screenshot={png}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        page.as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S)
    assert done.returncode == 0 and png.exists(), done.stderr[-2000:]
    print(f"screenshot: {png}")
    return decode_png(png.read_bytes())


def check_not_blank(width: int, height: int, rows: list[bytes]) -> None:
    assert (width, height) == WINDOW
    colours: set[tuple[int, int, int]] = set()
    non_white = 0
    for row in rows[::3]:
        for px in pixels(row)[::3]:
            colours.add((px[0] // 16, px[1] // 16, px[2] // 16))
            non_white += px != (255, 255, 255)
    sampled = len(rows[::3]) * len(pixels(rows[0])[::3])
    assert len(colours) >= 40, f"only {len(colours)} colours: a blank or broken page"
    assert non_white / sampled > 0.10, f"{non_white / sampled:.1%} non-white"


def lane_separator_rows(rows: list[bytes]) -> list[int]:
    """Rows where the separator colour spans most of the plot (marks may cover some of it)."""
    plot = range(timeline.LABEL_WIDTH_PX + 20, timeline.LABEL_WIDTH_PX + timeline.PLOT_WIDTH_PX)
    found = []
    for y, row in enumerate(rows):
        px = pixels(row)
        hits = sum(near(px[x], SEPARATOR_RGB, 3) for x in plot[::4])
        if hits > 0.4 * len(plot[::4]):
            found.append(y)
    return found


def count_colour(rows: list[bytes], rgb: tuple[int, int, int]) -> int:
    return sum(near(px, rgb) for row in rows[::2] for px in pixels(row)[::2])


def check_lanes(rows: list[bytes], data: dict[str, Any]) -> list[int]:
    model = timeline.build_model(data)
    separators = lane_separator_rows(rows)
    gaps = [b - a for a, b in itertools.pairwise(separators)]
    # one separator under each lane on screen, at the page's lane heights (1 px = 1 CSS px)
    expected = [round(lane.height) for lane in model.lanes[1:]]
    on_screen = gaps[: len(expected)]
    assert len(separators) >= len(model.lanes) - 1, (separators, expected)
    assert all(abs(g - e) <= 1 for g, e in zip(on_screen, expected, strict=False)), (
        on_screen,
        expected,
    )
    return separators


@pytest.fixture(scope="module")
def failing_counter() -> dict[str, Any]:
    result = runner.run_one(runner.Task("counter_unsafe", UNSAFE_SEED, {}, return_artifact=True))
    assert not result.passed and result.artifact is not None
    return result.artifact


@pytest.fixture(scope="module")
def store_run() -> dict[str, Any]:
    scenario = registry[STORE_SCENARIO]
    sim = Simulation(seed=STORE_SEED, **scenario.simulation(STORE_SEED, {}))
    verdict = sim.run(scenario.build(sim, {}))
    status = "passed" if verdict.ok else "failed"
    spec = runner.replay_spec(STORE_SCENARIO, STORE_SEED, {})
    return artifact_mod.build(sim, STORE_SCENARIO, status, verdict.failure, spec)


def rendered(data: dict[str, Any], tmp_path: Path, check: Callable[[list[bytes]], None]) -> None:
    width, height, rows = screenshot(timeline.render(data), tmp_path)
    check_not_blank(width, height, rows)
    separators = check_lanes(rows, data)
    first_lane_top = max(0, separators[0] - round(timeline.build_model(data).lanes[0].height))
    check(rows[first_lane_top : separators[-1] + 1])  # the lanes only: not the legend


def test_a_failing_run_shows_its_lanes_faults_and_violation(
    failing_counter: dict[str, Any], tmp_path: Path
) -> None:
    def check(plot_rows: list[bytes]) -> None:
        assert count_colour(plot_rows, VIOLATION_RGB) > 200  # violation lines, fault marks

    rendered(failing_counter, tmp_path, check)


def test_a_store_run_shows_leaders_and_client_operations(
    store_run: dict[str, Any], tmp_path: Path
) -> None:
    def check(plot_rows: list[bytes]) -> None:
        assert count_colour(plot_rows, LEADER_RGB) > 500  # leader bands
        assert count_colour(plot_rows, OK_RGB) > 100  # ok operation bars

    rendered(store_run, tmp_path, check)
