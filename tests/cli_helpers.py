"""Running ``robench.cli.main`` in-process and checking its one-line errors, shared by the CLI test files."""

from __future__ import annotations

import pytest

from robench.cli import main


def run_main(capsys, args: list[str]) -> tuple[int, str, str]:
    """``main(args)``: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def one_line(err: str) -> str:
    """The single ``Error ...`` line of ``err``; fails on anything more (a traceback above all)."""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error"), err
    assert "Traceback" not in err
    return lines[0]
