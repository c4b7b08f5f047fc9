"""Hooks that own connections to the build system, S3 and Kubernetes."""
