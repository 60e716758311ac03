"""Pronunciation lexicons: ``WORD PH1 PH2 ...`` per line (tab or spaces), one or more files.

The first pronunciation of a word wins, across files in the order given: s3prl's SUPERB PR
reader (``downstream/ctc/corpus/libriphone.py``) does exactly this "for a deterministic
behavior", and phonecli follows it so its LibriSpeech targets equal SUPERB's. Kaldi
``lexiconp.txt`` lines (``WORD prob PH1 ...``) are accepted: a numeric second field is dropped.
"""

from __future__ import annotations

from pathlib import Path

from phonecli.errors import CorpusError


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def read_lexicons(paths) -> dict[str, list[str]]:
    """``{WORD: [phones]}`` (first pronunciation wins); :class:`CorpusError` naming a bad file/line."""
    lex: dict[str, list[str]] = {}
    for path in [Path(p) for p in paths]:
        if not path.exists():
            raise FileNotFoundError(f"{path}: lexicon not found; pass --lexicon PATH")
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) > 2 and _is_number(parts[1]):
                parts = [parts[0], *parts[2:]]
            if len(parts) < 2:
                raise CorpusError(f"{path}:{n}: lexicon line {line.strip()!r} has no phones; fix or remove it")
            lex.setdefault(parts[0], parts[1:])
    if not lex:
        raise CorpusError(f"{', '.join(map(str, paths))}: empty lexicon")
    return lex


def required_lexicon(root: Path, lexicon, what: str) -> tuple[list[str], dict[str, list[str]]]:
    """``(absolute paths, lexicon)`` of a ``--lexicon`` option (a path or paths) that ``what`` cannot do without."""
    if lexicon is None:
        raise CorpusError(f"{root}: {what} needs --lexicon PATH (WORD PH1 PH2 ... per line) for its phone targets")
    paths = [str(Path(p).resolve()) for p in ([lexicon] if isinstance(lexicon, (str, Path)) else lexicon)]
    return paths, read_lexicons(paths)


def phonemize(utt_id: str, text: str, lexicon: dict[str, list[str]], where: str) -> list[list[str]]:
    """Per word of ``text`` its lexicon phones; :class:`~phonecli.errors.UtteranceError` at the first OOV word."""
    from phonecli.errors import UtteranceError

    out = []
    for w in text.split():
        phones = lexicon.get(w)
        if phones is None:
            phones = lexicon.get(w.upper())
        if phones is None:
            raise UtteranceError(utt_id, f"word {w!r} is not in the lexicon ({where}); add it to the lexicon "
                                         "or drop the utterance with --on-error skip")
        out.append(list(phones))
    return out


def lexicon_utterance(rec, text: str, lexicon: dict[str, list[str]], where: str, phone_set=None):
    """The manifest row of an utterance whose targets are ``text`` through ``lexicon`` (words keep their phones).

    ``phone_set``: when given, every phone must be in it. Raises :class:`~phonecli.errors.UtteranceError`
    (OOV word, empty transcript, phone outside the set, or the record's own first error).
    """
    from phonecli.data.corpus import check_phone_set, utterance_from
    from phonecli.data.manifest import Word
    from phonecli.errors import UtteranceError

    if any(p.is_error for p in rec.problems):
        return utterance_from(rec, text="", phones=[], realized=[])     # raises the first error
    per_word = phonemize(rec.utt_id, text, lexicon, where)
    flat = [p for w in per_word for p in w]
    if not flat:
        raise UtteranceError(rec.utt_id, "empty transcript; remove the utterance or use --on-error skip")
    if phone_set is not None:
        check_phone_set(rec.utt_id, flat, phone_set, where)
    words = [Word(text=w, phones=ph, phone_accuracy=[]) for w, ph in zip(text.split(), per_word)]
    return utterance_from(rec, text=text, phones=None, realized=flat, words=words)
