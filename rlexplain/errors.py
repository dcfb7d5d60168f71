"""The errors rlexplain raises for bad input: one base class, one subclass per kind of mistake.

Every message is one line that names what was wrong and what would be right. The command line
catches :class:`RLExplainError` (and ``OSError``) and prints that line; anything else is a bug and
shows its traceback. The subclasses also derive from ``ValueError`` so that code catching the
built-in error for bad arguments keeps working.
"""

from __future__ import annotations


class RLExplainError(Exception):
    """Base class of every error rlexplain raises on purpose."""


class GameError(RLExplainError, ValueError):
    """An unknown game or env id."""


class CheckpointError(RLExplainError, ValueError):
    """A file that is missing, corrupt, or not an SB3 checkpoint rlexplain can use."""


class AgentError(RLExplainError, ValueError):
    """An agent that cannot be found, loaded, explained or used with the given env."""


class UnsupportedLayerError(RLExplainError, TypeError):
    """A layer (or network structure) that an explanation method cannot handle, and no rule was given for."""


class TargetError(RLExplainError, ValueError):
    """An explained output (``action=``) that the agent does not have."""


class MethodError(RLExplainError, ValueError):
    """An unknown explanation method, or parameters it does not take."""


class RunError(RLExplainError, ValueError):
    """Bad recording options, or a run folder that cannot be written or read."""


class DeviceError(RLExplainError, ValueError):
    """A device that does not exist here (``--device cuda`` without a GPU), or a name that is not a device."""


class SweepError(RLExplainError, ValueError):
    """A sweep that cannot start: a bad sweep file or option, an agent of another game, an unreachable Ray cluster."""


class CompareError(RLExplainError, ValueError):
    """Bad comparison input: checkpoints, states files, games."""


def one_line(exc: BaseException) -> str:
    """What the user is told of an error: its first line, with the file of an OSError when the text lacks it."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    filename = getattr(exc, "filename", None) if isinstance(exc, OSError) else None
    return f"{message}: {filename}" if filename and str(filename) not in message else message


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by a signal (SIGTERM from ``timeout``, ``docker stop`` or a batch scheduler; SIGHUP when
    the terminal closes), handled like Ctrl-C: what was written is kept and the run says ``interrupted``."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name
