"""stdout and stderr that outlive their reader, for the length of a run.

`tui-lora run P | tee log` or `| head -3`: the reader can go away while the run goes on (Ctrl+C
reaches the whole pipeline and tee dies first; head exits after its lines). Python ignores
SIGPIPE, so the next write raises BrokenPipeError wherever it happens: in a display, in a
library's print, or in the signal handler that is about to save the checkpoint. What the run
writes to the terminal is a view of events.jsonl, never the record, so losing the view must
cost nothing: the first failed write points that stream at os.devnull (what Python's docs
advise for SIGPIPE) and every later write goes there quietly.
Standard library only.
"""

from __future__ import annotations

import errno
import os
import sys

# EPIPE: the reader of a pipe is gone. EIO: the terminal itself is gone (a hung-up SSH session under nohup
# keeps its tty until the first write). Any other failure (a full disk behind `> file`) is left to surface.
GONE = (errno.EPIPE, errno.EIO)


class SurvivingStream:
    """A text stream whose writes never raise once its reader has gone; everything else is the stream's own."""

    def __init__(self, stream):
        self._stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self._stream.write(text)
            except OSError as exc:
                self._lost(exc)
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            self._lost(exc)

    def _lost(self, exc: OSError) -> None:
        if exc.errno not in GONE:
            raise exc
        self.gone = True
        try:
            # The stream's buffer still holds what could not be written; pointing the descriptor at /dev/null
            # lets the next flush (or the one at exit) succeed instead of failing again, or printing
            # "Exception ignored ... BrokenPipeError" and exiting 120.
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._stream.fileno())
            finally:
                os.close(devnull)
            self._stream.flush()
        except (OSError, ValueError, AttributeError):
            pass  # a stream without a descriptor of its own: later writes are dropped here instead

    def __getattr__(self, name):
        return getattr(self._stream, name)


def survive_closed_readers() -> None:
    """Make sys.stdout and sys.stderr SurvivingStreams (once); displays created after this write through them."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, SurvivingStream):
            setattr(sys, name, SurvivingStream(stream))
