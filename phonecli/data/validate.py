"""``phonecli data validate``: check a corpus source in the spirit of Kaldi's validate_data_dir.sh.

It reads exactly what ``prepare`` reads, with the same readers and checks, but reports every
problem instead of stopping at the first. Errors make ``prepare`` fail (or skip the utterance
with ``--on-error skip``); warnings (audio that extraction resamples or downmixes, a Kaldi
``text`` that disagrees with scores.json, out-of-range scores) do not, and ``validate`` exits 0
when only warnings are found.

Checked: missing/unreadable/empty/too-short audio; sample rate and channel count; ids in
wav.scp but not in scores.json and vice versa; duplicate ids; utt2spk coverage; speakers shared
between the released splits; malformed JSON and malformed Kaldi lines; phones outside the
inventory and the non-CMU map; word/phone/phones-accuracy length mismatches; mispronunciation
indices and symbols. Audio samples are not decoded (NaN samples surface at extraction).
"""

from __future__ import annotations

from pathlib import Path

from phonecli.data.normalize import CorpusError, Problem, UtteranceError, check_entry, first_error

__all__ = ["Problem", "validate_corpus", "summarize"]


def validate_corpus(source: str | Path, progress: bool | None = None) -> list[Problem]:
    """Every problem of SOURCE (OpenSLR dir, parquet dir or ``sample``), errors and warnings,
    in corpus order. A corpus that cannot be opened at all yields a single error."""
    from phonecli.data.prepare import _progress, open_source

    try:
        corpus, kind = open_source(source)
    except CorpusError as e:
        return [Problem("error", "", str(e))]  # the message already names the file
    problems: list[Problem] = list(corpus.problems)
    build = getattr(corpus, "build", None)      # readers of other corpora check while building
    with _progress(len(corpus), f"validate {kind}", progress) as bar:
        for rec in corpus.records():
            bar.update(1)
            problems += rec.problems
            if build is not None:
                if first_error(rec.problems) is None:
                    try:
                        build(rec, [])
                    except UtteranceError as e:
                        problems.append(Problem("error", f"utterance {e.utt_id}", e.reason, e.utt_id))
                    except CorpusError as e:
                        problems.append(Problem("error", "", str(e), rec.utt_id))
            elif rec.entry is not None:
                problems += check_entry(rec.utt_id, rec.entry)
    return problems


def summarize(problems: list[Problem]) -> str:
    errors = sum(p.is_error for p in problems)
    return f"{errors} error(s), {len(problems) - errors} warning(s)"
