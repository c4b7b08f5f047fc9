"""In-process fakes for services that cannot run here (only the Kubernetes API server)."""
