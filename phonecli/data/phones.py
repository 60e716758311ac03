"""Phone inventories and CTC vocabularies.

SpeechOcean762's inventory is the 39 CMU ARPAbet phones (stress stripped), ``PHONES``; the
module-level ``VOCAB`` / ``encode`` / ``decode`` are that vocabulary. Other corpora bring their
own inventory (TIMIT's 48 training phones, SUPERB's 71 stress-marked phones...), recorded in
the manifest's ``phone_set``; :class:`Vocabulary` is the CTC vocabulary of any inventory.

Vocabulary index 0 is the CTC blank; phones follow in the order of the phone set. This order
is part of the run-directory format (``run.json`` stores it too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from phonecli.errors import CorpusError, UnknownPhoneError  # noqa: F401  (re-exported)

PHONES: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY",
    "F", "G", "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P",
    "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
)
BLANK = "<blank>"
VOCAB: tuple[str, ...] = (BLANK, *PHONES)
PHONE_TO_ID: dict[str, int] = {p: i for i, p in enumerate(VOCAB)}

VOWELS = frozenset({"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"})

# Non-CMU symbols found in older SpeechOcean762 copies. They are mapped explicitly to CMU
# phone sequences (the manifest records every mapping it applied), never silently dropped.
NON_CMU_MAP: dict[str, tuple[str, ...]] = {
    "IR": ("IH", "R"),
    "AR": ("AA", "R"),
    "TR": ("T", "R"),
    "DR": ("D", "R"),
    "DZ": ("D", "Z"),
    "TS": ("T", "S"),
}

_STRESS = re.compile(r"^([A-Za-z]+)[012]$")


def strip_stress(symbol: str) -> str:
    """``"AH0"`` -> ``"AH"``; upper-cases; leaves symbols without a stress digit alone."""
    s = symbol.strip().upper()
    m = _STRESS.match(s)
    return m.group(1) if m else s


def normalize_phone(symbol: str) -> tuple[str, ...]:
    """Map one corpus phone token to a tuple of inventory phones.

    Stress is stripped; non-CMU symbols expand through ``NON_CMU_MAP``. Raises
    :class:`UnknownPhoneError` for anything else so callers can name the utterance.
    """
    s = strip_stress(symbol)
    if s in PHONE_TO_ID and s != BLANK:
        return (s,)
    if s in NON_CMU_MAP:
        return NON_CMU_MAP[s]
    raise UnknownPhoneError(f"unknown phone {symbol!r}")


def encode(phones: list[str] | tuple[str, ...]) -> list[int]:
    """Phones -> vocabulary ids (1..39). Raises KeyError on an unknown phone."""
    return [PHONE_TO_ID[p] for p in phones]


def decode(ids) -> list[str]:
    """Vocabulary ids -> phones (blank ids are dropped)."""
    return [VOCAB[int(i)] for i in ids if int(i) != 0]


@dataclass(frozen=True)
class Vocabulary:
    """The CTC vocabulary of a phone set: ``symbols[0]`` is the blank, then ``phones`` in order."""

    phones: tuple[str, ...]
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(set(self.phones)) != len(self.phones) or BLANK in self.phones:
            raise CorpusError(f"the manifest's phone set needs distinct symbols other than {BLANK}: {self.phones}; "
                              "fix corpus.phone_set (re-run `phonecli data prepare`)")
        object.__setattr__(self, "_ids", {p: i for i, p in enumerate(self.symbols)})

    @property
    def symbols(self) -> tuple[str, ...]:
        return (BLANK, *self.phones)

    def __len__(self) -> int:
        return len(self.phones) + 1

    def __contains__(self, phone: str) -> bool:
        return phone in self._ids and phone != BLANK

    def id(self, phone: str) -> int:
        return self._ids[phone]

    def encode(self, phones) -> list[int]:
        """Phones -> ids (1..len(phones)). Raises KeyError on a phone outside the set."""
        return [self._ids[p] for p in phones]

    def decode(self, ids) -> list[str]:
        """Ids -> phones (blank ids are dropped)."""
        syms = self.symbols
        return [syms[int(i)] for i in ids if int(i) != 0]


CMU39 = Vocabulary(PHONES)
