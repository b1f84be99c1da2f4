"""Helpers for integration tests against a real registry 2.8.2 in Docker.

Nothing here is a mock: containers, pushes, pulls and garbage collections are real. See
``registry`` (start/stop containers), ``images`` (push images with docker and skopeo),
``gc`` (run the registry's own garbage collector) and ``tree`` (read and edit the storage
tree the way an operator or retentiond would).
"""
