"""What every stage script shares: logging set-up and one-line errors."""

from __future__ import annotations

import logging
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from fmnist_pipeline.errors import PipelineError

logger = logging.getLogger("fmnist_pipeline")


def run_stage(name: str, function: Callable[..., Any], **kwargs: Any) -> Any:
    """Run ``function(**kwargs)`` as stage ``name``.

    A :class:`PipelineError` becomes one line on stderr and exit status 1; an
    interruption (Ctrl-C or SIGTERM) exit status 130 after the outputs being
    written are discarded. Anything else is a bug and keeps its traceback.
    """
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    # Turn SIGTERM into the same clean unwinding as Ctrl-C, so temporary files
    # are removed and the previous outputs stay as they were.
    signal.signal(signal.SIGTERM, _interrupt)
    logger.info("stage %s: start", name)
    started = time.perf_counter()
    try:
        result = function(**kwargs)
    except PipelineError as error:
        print(f"error: stage {name}: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"error: stage {name} interrupted; rerun `dvc repro`", file=sys.stderr)
        sys.exit(130)
    logger.info("stage %s: done in %.1fs", name, time.perf_counter() - started)
    return result


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)
