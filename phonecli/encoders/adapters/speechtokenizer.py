"""SpeechTokenizer (fnlp/SpeechTokenizer, the ``speechtokenizer`` PyPI package; extra ``tokenizer``).

A SEANet convolutional encoder (+ 2-layer BiLSTM) downsamples 16 kHz audio by
``prod(strides)`` = 320 -> **50 frames/s**; an 8-level residual vector quantizer (RVQ, 1024 codes
of dimension 1024 each) then encodes it. RVQ level 1 was distilled from HuBERT (the "semantic"
level); levels 2..8 add acoustic detail.

What is stored (``1 + n_q`` states = 9 x 1024):

* state 0: the SEANet encoder output (continuous, before quantization);
* state k (1..n_q): the code embedding chosen by RVQ level k, i.e. the codebook vector of that
  level's code at each frame (``quantized_list[k-1]`` of ``SpeechTokenizer.forward_feature``).
  They are per-level vectors, not running sums: the sum of states 1..k is the level-k
  reconstruction of state 0. Codes themselves are recoverable as nearest codebook entries.

Not stored: the semantic-teacher projection ``transform(RVQ-1)`` (768-dim for the released
model, a fixed linear map of state 1 with a different width, so it cannot share the
``(states, frames, dim)`` array); the decoder.

Loading: a Hub id downloads ``<subfolder>/config.json`` and ``<subfolder>/SpeechTokenizer.pt``
(registry ``subfolder``, default ``speechtokenizer_hubert_avg``) through ``huggingface_hub``; a
local directory holds ``config.json`` and one ``*.pt`` state dict (pass ``speechtokenizer=DIR``:
its config.json has no ``model_type``). The state dict is read with ``torch.load(weights_only=True)``
and loaded strictly; codebooks that were never initialised (k-means init pending) are refused,
because the first forward would silently re-fit them on our audio.

Length: ``ceil(samples / 320)`` frames (each stride-r SEANet conv pads the end to
``ceil(T / r)``). Batching: reflect padding at the edges and a bidirectional LSTM see the whole
signal and there is no attention mask, so ``padding_safe = False``: ``forward`` runs utterances
of equal length together and never pads.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from phonecli.encoders.adapters.common import (
    SAMPLE_RATE,
    check_registry_numbers,
    check_waves,
    first_line,
    resolve_device,
)
from phonecli.encoders.base import EncoderAdapter, ExtractionError, LayerInfo, ModelSpec
from phonecli.encoders.layers import describe_states
DEFAULT_SUBFOLDER = "speechtokenizer_hubert_avg"
CHECKPOINT = "SpeechTokenizer.pt"
INSTALL_HINT = "pip install 'phonecli[tokenizer]'"


def import_speechtokenizer():
    """The ``speechtokenizer.SpeechTokenizer`` class, or one line telling how to install it."""
    try:
        from speechtokenizer import SpeechTokenizer
    except ImportError as e:
        raise ExtractionError(
            f"speechtokenizer: the optional `speechtokenizer` package is not installed ({first_line(e)}); "
            f"{INSTALL_HINT}"
        ) from e
    return SpeechTokenizer


def locate_files(source: str, subfolder: str, revision: str | None) -> tuple[Path, Path, str | None]:
    """``(config.json, state dict, commit)`` for a local directory or a Hub repository."""
    path = Path(source)
    if path.is_dir():
        for d in (path, path / subfolder):
            cfg = d / "config.json"
            ckpts = [d / CHECKPOINT] if (d / CHECKPOINT).exists() else sorted(d.glob("*.pt"))
            if cfg.exists() and len(ckpts) == 1:
                return cfg, ckpts[0], None
        raise ExtractionError(
            f"{source}: expected config.json and one *.pt state dict ({CHECKPOINT}) in the directory "
            f"or its {subfolder}/ subfolder"
        )
    from huggingface_hub import hf_hub_download
    from transformers.utils.hub import extract_commit_hash

    try:
        cfg = hf_hub_download(source, f"{subfolder}/config.json", revision=revision)
        ckpt = hf_hub_download(source, f"{subfolder}/{CHECKPOINT}", revision=revision)
    except Exception as e:  # huggingface_hub raises many error types, all meaning "not available"
        raise ExtractionError(
            f"{source}: cannot download {subfolder}/config.json and {CHECKPOINT} ({first_line(e)}); "
            "check the repository id/--revision, or pass speechtokenizer=DIR with a local copy"
        ) from e
    return Path(cfg), Path(ckpt), extract_commit_hash(str(cfg), None)


class Adapter(EncoderAdapter):
    """SpeechTokenizer -> ``(1 + n_q, ceil(samples / 320), dimension)`` float32, 50 frames/s."""

    padding_safe = False

    def __init__(self, spec: ModelSpec, source: str, *, revision: str | None = None,
                 device: str = "cpu", trust_remote_code: bool = False):
        super().__init__(spec, source, revision=revision, device=device, trust_remote_code=trust_remote_code)
        import json

        import torch

        SpeechTokenizer = import_speechtokenizer()
        self.device = resolve_device(device)
        cfg_file, ckpt, commit = locate_files(source, str(spec.extra.get("subfolder", DEFAULT_SUBFOLDER)), revision)
        try:
            cfg = json.loads(cfg_file.read_text())
            for key in ("strides", "dimension", "n_q", "codebook_size", "sample_rate"):
                cfg[key]  # noqa: B018 -- presence check with a clear error below
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ExtractionError(f"{cfg_file}: not a SpeechTokenizer config.json ({first_line(e)})") from e
        if int(cfg["sample_rate"]) != SAMPLE_RATE:
            raise ExtractionError(f"{cfg_file}: model runs at {cfg['sample_rate']} Hz; only 16 kHz is supported")
        with warnings.catch_warnings():  # the package still uses torch's deprecated weight_norm
            warnings.simplefilter("ignore", FutureWarning)
            model = SpeechTokenizer(cfg)
        try:
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
        except (RuntimeError, OSError, ValueError) as e:
            raise ExtractionError(f"{ckpt}: not a SpeechTokenizer state dict for {cfg_file} ({first_line(e)})") from e
        pending = [n for n, b in model.named_buffers() if n.endswith(".inited") and not bool(b.all())]
        if pending:
            raise ExtractionError(
                f"{ckpt}: {len(pending)} RVQ codebooks were never initialised (e.g. {pending[0]}); "
                "the first forward would re-fit them by k-means on our audio: not a trained checkpoint"
            )
        self.model = model.eval().to(self.device)
        self.config = cfg
        self.n_q = int(cfg["n_q"])
        self.strides = [int(r) for r in cfg["strides"]]
        self.model_id = source
        self.revision = commit or revision
        self.hidden_size = int(cfg["dimension"])
        self.num_states = 1 + self.n_q
        self.frame_rate = SAMPLE_RATE / math.prod(self.strides)
        self.settings = {"states": "SEANet encoder output, then the code embedding of each RVQ level (not summed)",
                         "n_q": self.n_q}
        check_registry_numbers(spec, source, self.num_states, self.hidden_size)

    def layers(self) -> list[LayerInfo]:
        return describe_states("speechtokenizer", self.num_states, self.frame_rate)

    def num_frames(self, num_samples: int) -> int:
        """``ceil`` through each stride-r SEANet conv = ``ceil(samples / prod(strides))``
        (0 below one frame hop, 320 samples: forward refuses such audio as too short)."""
        n = int(num_samples)
        if n < math.prod(self.strides):
            return 0
        for r in self.strides:
            n = -(-n // r)
        return n

    def forward(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """``waves``: float32 ``(samples,)`` at 16 kHz -> per utterance float32
        ``(1 + n_q, ceil(samples / 320), dimension)``; equal lengths batched, never padded."""
        import torch

        waves = check_waves(self.spec.name, waves, min_samples=math.prod(self.strides))
        out: list[np.ndarray | None] = [None] * len(waves)
        by_len: dict[int, list[int]] = {}
        for i, w in enumerate(waves):
            by_len.setdefault(len(w), []).append(i)
        levels = list(range(self.n_q))
        for idx in by_len.values():
            x = torch.from_numpy(np.stack([waves[i] for i in idx]))[:, None, :].to(self.device)
            with torch.inference_mode():
                e = self.model.encoder(x)                                  # (B, D, T)
                _, _, _, per_level = self.model.quantizer(e, n_q=self.n_q, layers=levels)
                states = torch.stack([e, *per_level], dim=1)               # (B, S, D, T)
            states = states.transpose(2, 3).float().cpu().numpy()          # (B, S, T, D)
            for b, i in enumerate(idx):
                out[i] = np.ascontiguousarray(states[b])
        return out  # type: ignore[return-value]
