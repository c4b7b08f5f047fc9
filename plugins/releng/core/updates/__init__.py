"""The general_updates domain, one module per task: prepare_updates (params, plan, work lists, closure view),
update_repodata (createrepo_c --update, kept metadata, signing, the swap), emit_staging_asset and
remove_work_area. sync_repos and repoclosure run the full_compose steps; sync_to_staging is
``releng.core.staging.sync_to_staging``."""


class UpdatesError(ValueError):
    """The run's input is wrong (parameters, profile, metadata, keys); retrying cannot help."""


# The work lists prepare_updates makes, one ``plan.<kind>`` task each. Here, not in prepare_updates, so that the DAG
# file builds its plan tasks without importing the task's code (and its XML, repodata and signing modules).
PLAN_KINDS = ("reposync", "repoclosure", "repodata")
