"""Yum repositories on disk: one reader for every repodata question.

* :mod:`.repomd`: ``repomd.xml`` records, hrefs inside a tree, checksum names, :class:`~.repomd.RepoError`.
* :mod:`.metadata`: metadata files opened in any compression createrepo_c writes.
* :mod:`.primary`: the packages of primary, NEVRAs and rpm's version order, package changes.
* :mod:`.verify`: :func:`~.verify.verify_repo` (one repository) and :func:`~.verify.verify_tree` (every
  repository under a directory), one :class:`~.verify.TreeReport`, with the verify cache.
* :mod:`.signatures`: gpg ``VALIDSIG`` parsing, :class:`~.signatures.SignatureChecker`, ``rpm -K`` verdicts.
* :mod:`.trees`: synced trees: hard links to unchanged packages, the kickstart tree.
* :mod:`.dnf_output`: what ``dnf reposync`` and ``dnf repoclosure`` print.
"""
