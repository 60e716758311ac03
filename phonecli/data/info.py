"""``phonecli data info``: per-split corpus statistics from a manifest (no audio is read).

Every corpus: ``utterances``, ``speakers``, ``hours``, ``phones`` (canonical phones), ``seconds``,
``words``. The rest follows the corpus' protocols (``Manifest.corpus.protocols``), so a column is
never printed where it means nothing:

- ``seed``/``phone`` (SpeechOcean762): HQ utterance = accuracy >= 8; positive (mispronounced)
  utterance = accuracy <= 6; mispronounced phone = phone accuracy < 0.5; annotated word-level
  mispronunciations.
- ``per`` (TIMIT, LibriSpeech, L2-ARCTIC, Kaldi/lhotse): ``scored_phones``, the phones the PER
  protocol scores against (perceived where annotated, canonical otherwise, after the corpus'
  scoring map: TIMIT's 48 -> 39 folding drops nothing but merges labels, so it equals ``phones``
  there unless a phone folds to nothing).
- ``mdd`` (L2-ARCTIC): ``annotated_utterances`` and, over their annotation units, ``substitutions``,
  ``deletions``, ``additions`` (the mispronunciations MDD is scored on).
"""

from __future__ import annotations

from phonecli.data.manifest import SPLITS, Manifest, Utterance

MISPRONOUNCED_PHONE = 0.5

#: (key, column title) per protocol group, in print order
COMMON = [("utterances", "utts"), ("speakers", "spk"), ("hours", "hours"), ("phones", "phones")]
SEED = [("hq_utterances", "HQ(>=8)"), ("positive_utterances", "pos(<=6)"),
        ("mispronounced_phones", "misp.phones(<0.5)")]
PER = [("scored_phones", "scored phones")]
MDD = [("annotated_utterances", "annotated"), ("substitutions", "subst."), ("deletions", "del."),
       ("additions", "add.")]


def _stats(utts: list[Utterance], manifest: Manifest) -> dict:
    from phonecli.evaluate.protocols import reference_phones

    spec = manifest.corpus
    seconds = float(sum(u.duration for u in utts))
    out = {"utterances": len(utts), "speakers": len({u.speaker for u in utts}), "hours": round(seconds / 3600, 4),
           "phones": sum(len(u.canonical_phones) for u in utts), "seconds": round(seconds, 3),
           "words": sum(len(u.words) for u in utts)}
    if "seed" in spec.protocols or "phone" in spec.protocols:
        phone_acc = [a for u in utts for a in u.phone_accuracy]
        out.update({
            "phones": len(phone_acc) or out["phones"],
            "hq_utterances": sum(u.is_hq for u in utts),
            "positive_utterances": sum(u.is_positive for u in utts),
            "mispronounced_phones": sum(a < MISPRONOUNCED_PHONE for a in phone_acc),
            "annotated_mispronunciations": sum(len(w.mispronunciations) for u in utts for w in u.words),
        })
    if "per" in spec.protocols:
        out["scored_phones"] = sum(len(spec.fold(reference_phones(u))) for u in utts)
    if "mdd" in spec.protocols:
        units = [a for u in utts if u.annotation for a in u.annotation]
        out["annotated_utterances"] = sum(bool(u.annotation) for u in utts)
        for kind, key in (("substitution", "substitutions"), ("deletion", "deletions"), ("addition", "additions")):
            out[key] = sum(a.kind == kind for a in units)
    return out


def columns(protocols) -> list[tuple[str, str]]:
    """The ``(key, title)`` columns that mean something for a corpus with these protocols."""
    cols = list(COMMON)
    if "seed" in protocols or "phone" in protocols:
        cols += SEED
    if "per" in protocols:
        cols += PER
    if "mdd" in protocols:
        cols += MDD
    return cols


def corpus_info(manifest: Manifest) -> dict:
    """``{"corpus": {...}, "splits": {"train": {...}, "dev": {...}, "test": {...}}, "total": {...}, ...}``.

    Every split is present (zero counts when empty); which keys a split has follows the corpus'
    protocols (module docstring).
    """
    spec = manifest.corpus
    return {
        "corpus_id": manifest.corpus_id,
        "source": manifest.source,
        "corpus": {"name": spec.name, "benchmark": spec.benchmark, "protocols": list(spec.protocols),
                   "scored_on": spec.scored_on, "standard": spec.standard},
        "dev": manifest.dev,
        "splits": {s: _stats(manifest.split(s), manifest) for s in SPLITS},
        "total": _stats(manifest.utterances, manifest),
        "skipped": len(manifest.skipped),
        "phone_mappings": len(manifest.phone_mappings),
    }


def format_info(info: dict) -> str:
    """A fixed-width table for people, with the columns of this corpus' protocols."""
    cols = columns(info["corpus"]["protocols"])
    rows = [("split", *[c[1] for c in cols])]
    for name, st in [*info["splits"].items(), ("total", info["total"])]:
        rows.append((name, *[f"{st[k]:.3f}" if k == "hours" else str(st[k]) for k, _ in cols]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    c = info["corpus"]
    lines = [f"corpus {info['corpus_id']} ({info['source'].get('kind', '?')}: {info['source'].get('path', '?')})",
             f"benchmark {c['benchmark']}; protocols {', '.join(c['protocols'])}; scored on {c['scored_on']}"
             + ("" if c["standard"] else "; not the benchmark's standard splits")]
    for r in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    dev = info.get("dev") or {}
    if dev:
        lines.append(f"dev: {len(dev.get('speakers', []))} train speakers, fraction {dev.get('fraction')}, "
                     f"seed {dev.get('seed')}")
    lines.append(f"skipped utterances: {info['skipped']}; phone mappings applied: {info['phone_mappings']}")
    return "\n".join(lines)
