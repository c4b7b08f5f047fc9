"""The compose domain: one module per full_compose step (named after its task id) and the compose STATUS."""
