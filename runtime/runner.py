"""Child side of a `call: module:function` job: ``python -m taskserver.runtime.runner module:function``.

The function is called with no arguments.  It returning None, True or 0 means success; an int is the exit
code; False is exit code 1; an exception prints its traceback (kept in the run's output tail) and exits 1.
"""

from __future__ import annotations

import importlib
import sys
import traceback


def main(argv: list[str]) -> int:
    if len(argv) != 1 or ":" not in argv[0]:
        print("usage: python -m taskserver.runtime.runner module:function", file=sys.stderr)
        return 2
    module_name, _, func_name = argv[0].partition(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        result = func()
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        return 1
    if result is None or result is True:
        return 0
    if result is False:
        return 1
    if isinstance(result, int):
        return result
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
