"""Corpus readers, manifest, phone set, audio loading, sample corpus."""
