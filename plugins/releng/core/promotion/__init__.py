"""Promotion of one release from staging to production, one module per concern.

The ``promote_to_production`` tasks and the module holding each one's logic:

* ``change_report`` → :mod:`.change_report` (one ``rsync --dry-run`` itemization,
  package changes, the delete bound, the record and its digest); the record's
  format is :mod:`.record`, the approver's view of it :mod:`.render`;
* ``approve_promotion`` and the gate every later step passes → :mod:`.approval`
  (decision files, pending markers, step results, audit entries built from files);
* ``promote_payload``, ``promote_metadata``, ``promote_deletions`` → :mod:`.promote_phases`;
* ``verify_production`` → :mod:`.verify_production`;
* ``update_file_lists`` → :mod:`.update_file_lists`;
* ``record_promotion`` → :func:`.approval.record_promotion`, appended by :mod:`.audit`.

Shared by them: :mod:`.target` (which directories a release promotes, and the
state directory), :mod:`.lock` (the production tree's flock), :mod:`.base`
(the error class, the log type, timestamps).

Promotion state lives beside production, outside every published category, in
``<production_root>/.releng/``: the lock file, ``promotions/<run>.json``
records, ``promotion-log.jsonl``, the gate's files, the verification cache and
the marker that says the file lists are stale.

This package's ``__init__`` imports nothing: import the module you need.
"""
