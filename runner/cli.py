"""How every command ends on bad input: the error's own message (naming the file, line or key) and exit status 1,
never a traceback; Ctrl-C exits with 130."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("runner")


@contextmanager
def bad_input_exits(*errors: type[BaseException]) -> Iterator[None]:
    """Turn the given error types raised inside the block into one logged line and exit status 1."""
    try:
        yield
    except errors as e:
        log.error("%s", e)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
