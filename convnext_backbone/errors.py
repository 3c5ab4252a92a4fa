"""Errors a user can act on, and how the tools show them: one line, or the full traceback.

A :class:`UserError` is an error whose message tells the whole story: a bad checkpoint, dataset,
config or model argument, a non-finite loss, a mixed OpenMMLab stack. Each such error subclasses
it as well as the built-in exception it has always been (``class CheckpointError(UserError,
ValueError)``), so callers catching ``ValueError`` still catch it. The tools end on one with
``<tool>: error: <message>`` (:func:`fail`); ``--debug`` or ``CONVNEXT_DEBUG=1``
(:func:`debug_enabled`) shows the full traceback instead.

This module imports nothing of the package and nothing heavy: ``convnext_backbone.stack`` raises
its error at ``import convnext_backbone``, before mmengine is imported.
"""
import contextlib
import os
import os.path as osp
import sys
from typing import Iterator, NoReturn

__all__ = ['DEBUG_ENV', 'ToolExit', 'UserError', 'debug_enabled', 'fail', 'one_line', 'report']

#: Set (to anything but '' or '0') for full tracebacks instead of one-line errors.
DEBUG_ENV = 'CONVNEXT_DEBUG'


class UserError(Exception):
    """An error whose message tells the whole story; the tools show it as one line."""


class ToolExit(SystemExit):
    """How :func:`fail` ends a tool: ``code`` is the exit status, ``str()`` the line it wrote.

    Args:
        code (int): The exit status.
        line (str): The line written to stderr.
    """

    def __init__(self, code: int, line: str) -> None:
        super().__init__(code)
        self.line = line

    def __str__(self) -> str:
        return self.line


def debug_enabled() -> bool:
    """Whether ``--debug`` was given (the tools export it) or ``CONVNEXT_DEBUG`` is set."""
    return os.environ.get(DEBUG_ENV, '') not in ('', '0')


def report(message: str) -> str:
    """Write ``<tool>: error: <message>`` on stderr, one line.

    Args:
        message (str): What went wrong and, where known, what to do.

    Returns:
        str: The line written (without its newline).
    """
    line = f'{osp.basename(sys.argv[0])}: error: {message}'
    sys.stderr.write(line + '\n')
    return line


def fail(message: str, code: int = 2) -> NoReturn:
    """End the tool with :func:`report`'s line and no traceback.

    Args:
        message (str): What went wrong.
        code (int): Exit status: 2 (the default) for a wrong argument, 1 for a failure.

    Raises:
        ToolExit: Always.
    """
    raise ToolExit(code, report(message))


@contextlib.contextmanager
def one_line(code: int = 1) -> Iterator[None]:
    """End the tool with ``fail(message, code)`` for a :class:`UserError` raised inside; with
    :func:`debug_enabled` the error goes on with its traceback.

    Args:
        code (int): Exit status. Defaults to 1.
    """
    try:
        yield
    except UserError as err:
        if debug_enabled():
            raise
        fail(str(err), code)
