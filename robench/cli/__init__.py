"""The ``robench`` command line: parse flags, call one library function, render the result.

Every :class:`~robench.errors.RobenchError` and every usage error becomes one line ``Error: ...`` on stderr with
exit code 2 (usage) or 1 (runtime); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from importlib import import_module

import typer

from ..errors import RobenchError
from .common import NAME_RE, app, err_console  # noqa: F401  (NAME_RE: kept importable from robench.cli)

# each registers its commands on `app`, in -h order
for _module in ("train", "attack", "report", "leaderboard", "zoo", "data"):
    import_module(f".{_module}", __name__)


# --------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning errors into one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    threads = _threads()
    debug = "--debug" in args[: next((i for i, a in enumerate(args) if not a.startswith("-")), len(args))]
    app.info.epilog = threads
    cmd = typer.main.get_command(app)
    try:
        code = cmd.main(args=args, prog_name="robench", standalone_mode=False)
        if code == 130 and not _rank_tag():  # typer turns Ctrl-C into a silent 130 (no command returns one)
            err_console.print("[red]Error:[/] interrupted; finished work was kept", highlight=False)
        sys.exit(code if isinstance(code, int) else 0)
    except RobenchError as e:
        if debug:
            raise
        if not _rank_prints(e):
            sys.exit(e.exit_code)
        from rich.markup import escape  # messages may quote paths in brackets (gloo's '[.../pair.cc:545]')

        err_console.print(f"[red]Error{_rank_tag()}:[/] {escape(' '.join(str(e).split()))}", highlight=False,
                          soft_wrap=True)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err_console.print("[red]Error:[/] aborted", highlight=False)
        sys.exit(130)
    except KeyboardInterrupt:  # torchrun passes Ctrl-C to every rank: rank 0 says it
        if not _rank_tag():
            err_console.print("[red]Error:[/] interrupted; finished work was kept", highlight=False)
        sys.exit(130)
    except typer.TyperException as e:  # usage errors of the bundled click: bad option, bad value, ...
        if debug:
            raise
        if _rank_tag():  # every rank parses the same line: rank 0 says it once
            sys.exit(getattr(e, "exit_code", 2))
        msg = e.format_message() if hasattr(e, "format_message") else str(e)
        ctx = getattr(e, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else ""  # every error line starts with "Error:"
        from rich.markup import escape

        err_console.print(f"[red]Error:[/] {escape(where + ' '.join(msg.split()))}", highlight=False, soft_wrap=True)
        sys.exit(getattr(e, "exit_code", 2))
    except OSError as e:
        if debug:
            raise
        err_console.print(f"[red]Error:[/] {e.strerror or e}: {e.filename or ''}", highlight=False)
        sys.exit(1)
    except Exception as e:  # a failure nobody foresaw (a bug, memory): still one line; --debug shows where
        if debug:
            raise
        first = (str(e).strip().splitlines() or [""])[0][:300]
        err_console.print(f"[red]Error{_rank_tag()}:[/] unexpected {type(e).__name__}: {first} (rerun with --debug "
                          "for the traceback)", highlight=False, soft_wrap=True)
        sys.exit(1)


def _threads() -> str:
    """Choose the torch thread count before torch starts (:func:`robench.runtime.configure_threads`) and say
    which, for ``--help``; a bad ROBENCH_THREADS is one line and exit 2."""
    from ..runtime import configure_threads

    try:
        n, why = configure_threads()
    except RobenchError as e:
        err_console.print(f"[red]Error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    return (f"Threads: {n} torch thread(s) per process ({why}): the free cores, so that a run never "
            "oversubscribes the machine. ROBENCH_THREADS=N sets another number.")


def _rank_tag() -> str:
    """`` (rank k)`` in a torchrun rank k > 0 (torchrun sets RANK and MASTER_ADDR), else empty."""
    rank = os.environ.get("RANK", "0") if "MASTER_ADDR" in os.environ else "0"
    return f" (rank {rank})" if rank not in ("", "0") else ""


def _rank_prints(e: RobenchError) -> bool:
    """Rank 0 prints every error; another rank only its own failures inside the job (errors before it, usage
    errors and a lost peer are the same on every rank, and rank 0 reports them)."""
    from ..errors import RankFailed, UsageError

    if not _rank_tag():
        return True
    return getattr(e, "rank", None) is not None and not isinstance(e, (UsageError, RankFailed))


if __name__ == "__main__":  # pragma: no cover
    main()

