"""Errors a user can hit, each saying what was wrong and what to do.

    BiencError                  base; the CLI prints its message and exits 1, the API answers 4xx/5xx
    ├── ConfigError             a setting is invalid or names something that is not there
    ├── ModelLoadError          the configured model cannot be loaded
    ├── CollectionError         a collection is missing, or was built by another model
    ├── InvalidInputError       a document, query or parameter is malformed (names field / line)
    ├── JobNotFoundError        no such job (expired, or never created)
    └── StoreUnavailableError   Qdrant did not answer; transient, retried by workers
        └── DocumentsBusyError  another writer held the documents too long; tried again
"""

from __future__ import annotations


class BiencError(Exception):
    """Base of every error bienc raises on purpose."""


class ConfigError(BiencError):
    pass


class ModelLoadError(BiencError):
    pass


class CollectionError(BiencError):
    pass


class CollectionNotFoundError(CollectionError):
    pass


class InvalidInputError(BiencError):
    pass


class JobNotFoundError(BiencError):
    pass


class StoreUnavailableError(BiencError):
    pass


class DocumentsBusyError(StoreUnavailableError):
    """Another writer held some of the documents (bienc.queue.versions) past the wait."""
