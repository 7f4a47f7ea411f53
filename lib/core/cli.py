"""Shared start-up for the entry scripts: logging once, user errors as one line."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable, Optional

from lib.errors import UserError

logger = logging.getLogger("pbn")

EXIT_USER_ERROR = 2  # bad input, missing file/asset, bad config
EXIT_INTERRUPTED = 130


def configure_logging(level: str = "INFO", log_file: Optional[str | Path] = None) -> None:
    """Log to stderr (and to ``log_file`` when given), once per process."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    logging.basicConfig(
        level=getattr(logging, str(level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        handlers=handlers,
        force=True,
    )


def run_main(main: Callable[[], Optional[int]]) -> None:
    """Run an entry point; a :class:`UserError` (or a plain missing file) becomes
    one ``error: ...`` line on stderr and exit code 2, Ctrl-C exit code 130."""
    try:
        code = main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except FileNotFoundError as err:
        print(f"error: file not found: {err.filename or err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(code or 0)
