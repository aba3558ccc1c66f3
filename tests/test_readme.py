"""README.md's simulation example runs as written (docs match the code)."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_simulation_example_runs(tmp_path, capsys):
    blocks = re.findall(r"```python\n(import asyncio, detsim.*?)```", README.read_text(), re.S)
    assert len(blocks) == 1, "README.md should hold one runnable simulation example"
    script = tmp_path / "example.py"
    script.write_text(blocks[0])
    runpy.run_path(str(script), run_name="__main__")
    reply, now, trace_hash = capsys.readouterr().out.split()
    assert reply == "b'HELLO\\n'"
    assert float(now) > 5.0  # delivered only after the 5 s partition healed
    # The README states what it prints and explains the time (the SYN retried each second).
    assert f"It prints `b'HELLO\\n' {now}`" in README.read_text()
    assert len(trace_hash) == 32
