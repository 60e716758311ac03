"""``phonecli data info``: per-split corpus statistics from a manifest (no audio is read).

Definitions (the seed protocol and the corpus' own): HQ utterance = accuracy >= 8; positive
(mispronounced) utterance = accuracy <= 6; mispronounced phone = phone accuracy < 0.5.
"""

from __future__ import annotations

from phonecli.data.manifest import SPLITS, Manifest, Utterance

MISPRONOUNCED_PHONE = 0.5


def _stats(utts: list[Utterance]) -> dict:
    seconds = float(sum(u.duration for u in utts))
    phone_acc = [a for u in utts for a in u.phone_accuracy]
    return {
        "utterances": len(utts),
        "speakers": len({u.speaker for u in utts}),
        "hours": round(seconds / 3600, 4),
        "phones": len(phone_acc),
        "hq_utterances": sum(u.is_hq for u in utts),
        "positive_utterances": sum(u.is_positive for u in utts),
        "mispronounced_phones": sum(a < MISPRONOUNCED_PHONE for a in phone_acc),
        # extra keys (allowed by the format): exact seconds, words, annotated errors
        "seconds": round(seconds, 3),
        "words": sum(len(u.words) for u in utts),
        "annotated_mispronunciations": sum(len(w.mispronunciations) for u in utts for w in u.words),
    }


def corpus_info(manifest: Manifest) -> dict:
    """``{"splits": {"train": {...}, "dev": {...}, "test": {...}}, "total": {...}, ...}``.

    Every split is present (zero counts when empty). Per split: ``utterances``, ``speakers``,
    ``hours``, ``phones``, ``hq_utterances``, ``positive_utterances``, ``mispronounced_phones``
    (+ ``seconds``, ``words``, ``annotated_mispronunciations``).
    """
    return {
        "corpus_id": manifest.corpus_id,
        "source": manifest.source,
        "dev": manifest.dev,
        "splits": {s: _stats(manifest.split(s)) for s in SPLITS},
        "total": _stats(manifest.utterances),
        "skipped": len(manifest.skipped),
        "phone_mappings": len(manifest.phone_mappings),
    }


def format_info(info: dict) -> str:
    """A fixed-width table for people."""
    cols = [("utterances", "utts"), ("speakers", "spk"), ("hours", "hours"), ("phones", "phones"),
            ("hq_utterances", "HQ(>=8)"), ("positive_utterances", "pos(<=6)"),
            ("mispronounced_phones", "misp.phones(<0.5)")]
    rows = [("split", *[c[1] for c in cols])]
    for name, st in [*info["splits"].items(), ("total", info["total"])]:
        rows.append((name, *[f"{st[k]:.3f}" if k == "hours" else str(st[k]) for k, _ in cols]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"corpus {info['corpus_id']} ({info['source'].get('kind', '?')}: {info['source'].get('path', '?')})"]
    for r in rows:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    dev = info.get("dev") or {}
    if dev:
        lines.append(f"dev: {len(dev.get('speakers', []))} train speakers, fraction {dev.get('fraction')}, "
                     f"seed {dev.get('seed')}")
    lines.append(f"skipped utterances: {info['skipped']}; non-CMU phone mappings applied: {info['phone_mappings']}")
    return "\n".join(lines)
