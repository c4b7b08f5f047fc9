"""Point releases: the new minor release into place, its links switched, the previous one into the vault.

The ``point_release`` DAG is a promotion (``releng.core.promotion``: the change
report, the approval gate, the phases, verification, the file lists, the audit
log) whose record also holds the point release's plan, and two more steps:

* ``change_report`` adds the plan → :mod:`.plan`;
* ``switch_links`` → :mod:`.switch_links`;
* ``vault_release`` → :mod:`.vault_release`.

This package's ``__init__`` imports nothing: import the module you need.
"""
