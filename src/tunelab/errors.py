"""The one exception type for user mistakes: the CLI prints it as one line and exits 2."""


class UserError(Exception):
    """Bad input from the user (recipe, data, arguments). Its message is the whole report."""


def where(source: str, line: int | None) -> str:
    """`file:line` when the line is known, else just the file (or override) name."""
    return f"{source}:{line}" if line else source
