"""Corpus readers, manifest, phone set, audio loading, sample corpus.

Public API (imported lazily so `import phonecli.data.manifest` stays light)::

    prepare_corpus(source, out, dev_fraction=0.1, seed=0, on_error="fail") -> Manifest
    load_manifest(dir) -> Manifest
    corpus_info(manifest) -> dict
    validate_corpus(source) -> list[Problem]
    download_corpus(to, url=DEFAULT_URL, md5=None) -> Path
"""

from __future__ import annotations

_LAZY = {
    "prepare_corpus": "phonecli.data.prepare",
    "load_manifest": "phonecli.data.prepare",
    "corpus_info": "phonecli.data.info",
    "validate_corpus": "phonecli.data.validate",
    "Problem": "phonecli.data.normalize",
    "CorpusError": "phonecli.data.normalize",
    "UtteranceError": "phonecli.data.normalize",
    "download_corpus": "phonecli.data.download",
    "DownloadError": "phonecli.data.download",
    "Manifest": "phonecli.data.manifest",
    "Utterance": "phonecli.data.manifest",
    "Word": "phonecli.data.manifest",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'phonecli.data' has no attribute {name!r}")
