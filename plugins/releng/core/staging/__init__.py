"""Staging, the web-served tree promotion copies from: the one staging sync both DAGs' ``sync_to_staging``
run (:mod:`.sync_to_staging`) and the release key its ``repomd.xml`` files are signed with (:mod:`.signing`)."""
