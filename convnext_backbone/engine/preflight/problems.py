""":class:`DatasetError`, and how the checks word what they find: every problem in one line."""
from typing import List, Sequence

from ...errors import UserError


class DatasetError(UserError, ValueError):
    """A dataset of the config is missing, empty or malformed."""


def raise_problems(problems: List[str]) -> None:
    """Raise the problems found, if any, as one :class:`DatasetError`.

    Args:
        problems (list[str]): One message per problem.

    Raises:
        DatasetError: The one problem, or all of them in one line.
    """
    if len(problems) == 1:
        raise DatasetError(problems[0])
    if problems:
        raise DatasetError(f'{len(problems)} problems with the data of the config: '
                           + '; '.join(problems))


def short(names: Sequence[str], n: int = 6) -> str:
    """The first ``n`` names, quoted, and how many there are in all when there are more.

    Args:
        names (Sequence[str]): Class or category names.
        n (int): How many to show. Defaults to 6.

    Returns:
        str: E.g. ``"'a', 'b', ... (9 in all)"``.
    """
    shown = ', '.join(repr(x) for x in list(names)[:n])
    return shown + (f', ... ({len(names)} in all)' if len(names) > n else '')
