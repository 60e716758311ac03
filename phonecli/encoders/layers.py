"""What every stored hidden-state index means: one layer convention for every encoder family.

phonecli stores ``N + 1`` states for an encoder with ``N`` Transformer/conformer layers and
numbers them as s3prl/SUPERB and transformers 4.x do (the seed's published numbers were made
with transformers 4.x):

* index 0 is the input of the first layer (embeddings / CNN features / conv stem);
* index ``i`` (1..N-1) is the output of layer ``i``;
* index ``N`` is the encoder's final output *after* its final LayerNorm, i.e. the encoder's
  ``last_hidden_state`` (what a CTC head or a language model reads). For pre-LN ("stable layer
  norm") SSL encoders transformers >= 5.16 puts the pre-LayerNorm state last in
  ``hidden_states`` (``capture_outputs(tie_last_hidden_states=False)``); phonecli stores the
  encoder output there instead, as transformers 4.x ``hidden_states[N]`` and s3prl's hook on
  the encoder's output do.

:data:`LAYER_CONVENTION` names this numbering; the extraction runner writes it into every
cache and :func:`phonecli.cache.store.check_layer_convention` refuses caches written with
another one (older phonecli stored the pre-LayerNorm state at index N for pre-LN encoders).

:func:`describe_states` is the one place that says what each index is: the adapters' ``layers()``
(stored as ``layer_info`` in the cache) and ``phonecli models --json`` both use it. Pure Python:
importing it never loads torch.
"""

from __future__ import annotations

from phonecli.encoders.base import LayerInfo

#: Recorded as the cache attribute ``layer_convention``; bump it whenever an index changes meaning.
LAYER_CONVENTION = "superb-v1"
CONVENTION_TEXT = ("index 0 = input of the first layer, i = output of layer i, N = encoder output after its final "
                   "LayerNorm (last_hidden_state); = transformers 4.x hidden_states[i] and s3prl/SUPERB hidden_states[i]")

SSL_FAMILIES = ("hubert", "wavlm", "wav2vec2", "data2vec-audio")


def _tf4(i: int, n: int) -> str:
    return f"transformers 4.x hidden_states[{i}]" + (" (= last_hidden_state)" if i == n else "")


def _ssl(n: int, fr: float, pre_ln: bool | None) -> list[LayerInfo]:
    norm0 = {True: " (pre-LN encoder: no LayerNorm before layer 1)",
             False: " -> encoder LayerNorm (post-LN encoder)",
             None: " (-> encoder LayerNorm for post-LN encoders)"}[pre_ln]
    last = {True: (f"transformer.{n} -> final LayerNorm", "encoder output: encoder.layer_norm of the last layer's "
                   "output (last_hidden_state; transformers >= 5.16 puts the pre-LayerNorm state last in "
                   "hidden_states, phonecli does not)"),
            False: (f"transformer.{n}", "encoder output: the last layer's output, which ends in its own LayerNorm "
                    "(post-LN encoder; = last_hidden_state)"),
            None: (f"transformer.{n} (encoder output)", "last_hidden_state: after encoder.layer_norm for pre-LN "
                   "encoders, the last layer's output for post-LN ones")}[pre_ln]
    s3 = "s3prl hidden_states[{}]"
    out = [LayerInfo(0, "embeddings", fr, "CNN features -> projection + conv position embedding" + norm0
                     + "; input of Transformer layer 1", f"{_tf4(0, n)}; {s3.format(0)} (input of encoder.layers[0])")]
    out += [LayerInfo(i, f"transformer.{i}", fr, "output of Transformer layer", f"{_tf4(i, n)}; {s3.format(i)}")
            for i in range(1, n)]
    out.append(LayerInfo(n, last[0], fr, last[1], f"{_tf4(n, n)}; {s3.format(n)} (encoder output)"))
    return out


def _whisper(n: int, fr: float, positions: str, last: tuple[str, str]) -> list[LayerInfo]:
    none = "s3prl: no upstream for this family"
    out = [LayerInfo(0, "conv+positions", fr, f"gelu(conv1) -> gelu(conv2, stride 2) + {positions} positions; "
                     "input of layer 1", f"{_tf4(0, n)}; {none}")]
    out += [LayerInfo(i, f"encoder_layer.{i}", fr, "output of encoder layer (pre-LN block)", f"{_tf4(i, n)}; {none}")
            for i in range(1, n)]
    out.append(LayerInfo(n, last[0], fr, last[1], f"{_tf4(n, n)}; {none}"))
    return out


def _conformer(n: int, fr: float, first: tuple[str, str], block: str) -> list[LayerInfo]:
    none = "s3prl: no upstream for this family"
    out = [LayerInfo(0, first[0], fr, first[1] + "; input of block 1", f"{_tf4(0, n)}; {none}")]
    out += [LayerInfo(i, f"{block}.{i}", fr, f"output of {block} block {i} (ends in its own LayerNorm)",
                      f"{_tf4(i, n)}; {none}") for i in range(1, n + 1)]
    out[-1].note = "encoder output: the last block's output (no encoder-level final norm; = last_hidden_state)"
    return out


def describe_states(family: str, num_states: int, frame_rate: float, *, pre_ln: bool | None = None,
                    detail: dict | None = None) -> list[LayerInfo]:
    """What each of the ``num_states`` stored states of ``family`` is, under :data:`LAYER_CONVENTION`.

    Args:
        family: registry family (``hubert``, ``whisper``, ...).
        num_states: stored states, ``N + 1`` for ``N`` layers (1 for fbank, ``1 + n_q`` for SpeechTokenizer).
        frame_rate: frames/s of the stored states.
        pre_ln: SSL families: True for pre-LN (stable layer norm) encoders, False for post-LN,
            None when unknown (``phonecli models`` without loading the checkpoint).
        detail: family specifics shown in the notes when the checkpoint is loaded
            (``scale_input`` for Parakeet, ``stride`` for W2V-BERT).

    Returns:
        One :class:`LayerInfo` per index, ``index`` 0..num_states-1.
    """
    n, fr, detail = num_states - 1, float(frame_rate), detail or {}
    if family in SSL_FAMILIES:
        return _ssl(n, fr, pre_ln)
    if family == "whisper":
        return _whisper(n, fr, "sinusoidal", (f"encoder_layer.{n} -> final LayerNorm",
                                              "encoder output: encoder.layer_norm of the last layer's output "
                                              "(last_hidden_state)"))
    if family == "qwen2-audio":
        return _whisper(n, fr, "learned", (
            f"avgpool(encoder_layer.{n}) -> final LayerNorm [25 fps, repeated x2]",
            f"encoder output (last_hidden_state, what the language model reads): AvgPool1d(2,2) -> layer_norm, "
            f"natively {fr / 2:g} frames/s; stored at {fr:g} frames/s by exact repetition (frames 2j and 2j+1 "
            f"hold pooled frame j; an odd last frame repeats the last pooled frame)"))
    if family == "w2v-bert":
        stride = detail.get("stride", 2)
        return _conformer(n, fr, ("feature_projection", f"LayerNorm -> Linear of {stride}-frame-stacked 80-bin fbank"),
                          "conformer")
    if family == "parakeet":
        scale = {True: " x sqrt(d_model)", False: ""}.get(detail.get("scale_input"), " (x sqrt(d_model) if scale_input)")
        return _conformer(n, fr, ("subsampling", f"8x conv subsampling -> Linear{scale}"), "conformer")
    if family == "speechtokenizer":
        out = [LayerInfo(0, "seanet_encoder", fr, "continuous SEANet+BiLSTM encoder output, before quantization",
                         "SpeechTokenizer.encoder(wav)")]
        for k in range(1, num_states):
            note = f"code embedding of RVQ level {k} (per-level vector, not a running sum)"
            if k == 1:
                note += "; HuBERT-distilled semantic level"
            out.append(LayerInfo(k, f"rvq.{k}", fr, note, f"SpeechTokenizer.quantizer.decode(codes[{k - 1}:{k}], st={k - 1})"))
        return out
    if family == "fbank":
        return [LayerInfo(0, "log-mel fbank (80)", fr, "Kaldi fbank, 25 ms window / 10 ms shift, snip_edges",
                          "torchaudio.compliance.kaldi.fbank (settings in docs/sections/models-spectral.md)")]
    return [LayerInfo(i, f"state.{i}", fr) for i in range(num_states)]
