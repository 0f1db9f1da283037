"""taskserver: a per-tenant background job server and the toolkit that puts it into the boot process.

The repository keeps the two halves at the top level (``runtime/``, ``installer/``, ``templates/``); this
package directory links them in so that the wheel, editable installs, mypy and the tests all see one
``taskserver`` package and nothing is installed as a top-level ``runtime`` or ``installer`` module.
"""

__version__ = "0.1.0"
