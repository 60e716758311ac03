"""CTC probe heads over cached features.

Input: a list over streams (one per cache) of float32 tensors ``(batch, layers_s, frames, dim_s)``
plus ``lengths`` ``(batch,)`` int64 (valid frames). Output: log-posteriors
``(batch, frames, len(VOCAB))`` (natural log, blank = index 0) at the input frame rate.

Every head has the same front end, in this order:

1. per-feature standardisation (mean/std per stream, layer and dim, computed on the train split
   and stored as buffers, so ``weights.safetensors`` alone reproduces the posteriors), folded into
2. a layer mixer per stream: softmax-weighted sum (``weighted``; weights start uniform, optional
   per-layer LayerNorm without affine) or concatenation along the feature dim (one layer:
   identity);
3. optional context stacking: frames ``t-K .. t+K`` concatenated (edges repeat the first/last
   frame), which frame-level heads over weight-free features (fbank) need.

Heads (``HEADS``):
  ``linear``      SUPERB-style: Linear(in, 256) -> Linear(256, vocab), no nonlinearity; the output
                  bias starts at the CTC blank prior (:meth:`ProbeHead.set_blank_prior`)
  ``weighted``    weighted layer sum + the ``linear`` head (the SUPERB "weighted sum" probe)
  ``mlp``         Linear(in, 512) -> ReLU -> Dropout -> Linear(512, 512) -> ReLU -> Dropout -> Linear(512, vocab)
  ``transformer`` Linear(in, 256) + sinusoidal positions -> 2-layer pre-norm TransformerEncoder
                  (4 heads, FF 1024, dropout 0.1 on the attention weights and the
                  residual/FF paths, padding masked) -> Linear(256, vocab)
  ``gated``       exactly 2 streams: a_t = A x_t, b_t = B y_t (256 each), per-frame scalar gate
                  g_t = sigmoid(w . [x_t; y_t] + c), h_t = g_t a_t + (1 - g_t) b_t -> Linear(256, vocab).
                  ``g = 1`` means "only stream 1". The last gate values are kept for statistics.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from phonecli.config import HEADS
from phonecli.errors import ProbeError

PROJ_DIM = 256
MLP_DIM = 512


class Standardize(nn.Module):
    """Holds per-(layer, dim) ``mean``/``std`` buffers (identity until set); applied by :class:`LayerMixer`."""

    def __init__(self, layers: int, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(layers, dim))
        self.register_buffer("std", torch.ones(layers, dim))


class ThreadStableLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` whose gradients do not depend on the CPU thread count (same parameters and
    state-dict keys).

    torch's fused CPU LayerNorm backward sums the weight/bias gradients over rows in per-thread
    chunks, so a transformer head trained with 1 and 2 threads drifted apart in the last bits after
    the first step (measured). Normalising without affine and applying the affine as two elementwise
    ops makes autograd reduce those gradients with a per-element sum whose order is fixed.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x, self.normalized_shape, None, None, self.eps)
        return y * self.weight + self.bias if self.elementwise_affine else y


def thread_stable_layer_norms(module: nn.Module) -> nn.Module:
    """Turn every plain ``nn.LayerNorm`` inside ``module`` into a :class:`ThreadStableLayerNorm` (in place)."""
    for m in module.modules():
        if type(m) is nn.LayerNorm and m.elementwise_affine and m.bias is not None:
            m.__class__ = ThreadStableLayerNorm
    return module


class ThreadStableEncoderLayer(nn.TransformerEncoderLayer):
    """``nn.TransformerEncoderLayer`` (pre-norm, same parameters and state-dict keys) whose results do
    not depend on the CPU thread count.

    It always runs module by module: the fused inference kernel (``torch._transformer_encoder_layer_fwd``,
    taken in eval mode) gave posteriors differing in the last bits with 1 and 2 threads (measured) and
    bypasses :class:`ThreadStableLayerNorm`. Self-attention is written out (:meth:`_sa_block`) instead
    of calling ``scaled_dot_product_attention``: with dropout on the attention weights SDPA takes its
    math path, whose ``softmax`` backward over rows whose length is not a multiple of the vector width
    reduces in an order that follows the thread count (measured on AVX-512: the same gradients differ
    with 1 and 2 threads). ``log_softmax(s).exp()`` is the same softmax with a backward that does not.
    """

    def __init__(self, *args, attention_dropout: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.attention_dropout = attention_dropout

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor | None = None,
                src_key_padding_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        x = src
        x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
        return x + self._ff_block(self.norm2(x))

    def _sa_block(self, x: torch.Tensor, attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None,
                  is_causal: bool = False) -> torch.Tensor:
        """Multi-head self-attention over ``x`` ``(batch, frames, dim)`` with ``self.self_attn``'s weights;
        ``key_padding_mask`` ``(batch, frames)``: True (or ``-inf``, as ``nn.TransformerEncoder`` passes
        it) at padded frames. The head passes no ``attn_mask`` and no causal flag."""
        if attn_mask is not None or is_causal:
            raise ProbeError("the transformer probe head attends over whole utterances (no attention mask)")
        attn = self.self_attn
        b, t, e = x.shape
        h = attn.num_heads
        q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).view(b, t, 3, h, e // h).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-2, -1)) * (e // h) ** -0.5       # (batch, heads, frames, frames)
        if key_padding_mask is not None:
            pad = key_padding_mask[:, None, None, :]
            scores = scores.masked_fill(pad, float("-inf")) if pad.dtype == torch.bool else scores + pad
        weights = F.dropout(torch.log_softmax(scores, dim=-1).exp(), self.attention_dropout, self.training)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(b, t, e)
        return self.dropout1(attn.out_proj(out))


class LayerMixer(nn.Module):
    """Standardise and combine layers: ``(B, L, T, D)`` -> ``(B, T, D)`` (weighted) or ``(B, T, L*D)`` (concat).

    Standardisation is one ``addcmul`` (``x * (1/s) + (-m/s)``): the all-layer batch is the largest
    tensor a probe touches and a two-pass ``(x - m) / s`` over it cost as much as the rest of the step.
    """

    def __init__(self, layers: int, dim: int, weighted: bool, layer_norm: bool):
        super().__init__()
        self.weighted, self.layer_norm, self.dim = weighted, layer_norm, dim
        if weighted:
            self.logits = nn.Parameter(torch.zeros(layers))  # zeros -> uniform softmax weights
        self.out_dim = dim if weighted or layers == 1 else layers * dim

    def forward(self, x: torch.Tensor, norm: Standardize) -> torch.Tensor:
        b, layers, t, d = x.shape
        x = torch.addcmul((-norm.mean / norm.std)[None, :, None], x, (1.0 / norm.std)[None, :, None])
        if self.layer_norm:
            x = F.layer_norm(x, (self.dim,))
        if self.weighted:
            return torch.einsum("l,bltd->btd", torch.softmax(self.logits, dim=0), x)
        return x[:, 0] if layers == 1 else x.permute(0, 2, 1, 3).reshape(b, t, layers * d)

    def weights(self) -> list[float] | None:
        return torch.softmax(self.logits.detach(), 0).tolist() if self.weighted else None


def stack_context(x: torch.Tensor, k: int) -> torch.Tensor:
    """``(B, T, D)`` -> ``(B, T, (2k+1) D)``: frames t-k..t+k, oldest first; edges replicate the edge frame.

    The loop's ``collate`` pads each utterance with copies of its own last frame (not zeros), so
    replicate-padding the batch equals replicating each utterance's last valid frame: posteriors do
    not depend on which utterances share a batch.
    """
    if k <= 0:
        return x
    b, t, d = x.shape
    padded = F.pad(x.transpose(1, 2), (k, k), mode="replicate")          # (B, D, T + 2k)
    win = padded.unfold(2, 2 * k + 1, 1)                                 # (B, D, T, 2k + 1)
    return win.permute(0, 2, 3, 1).reshape(b, t, (2 * k + 1) * d)


class SinusoidalPositions(nn.Module):
    def __init__(self, dim: int, max_len: int = 20000):
        super().__init__()
        pos = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        pe = torch.zeros(max_len, dim)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
        self.register_buffer("pe", pe, persistent=False)  # deterministic: not saved in the weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        if t > self.pe.shape[0]:
            raise ProbeError(f"an utterance of {t} frames exceeds the transformer head's {self.pe.shape[0]} positions; "
                             "use another --head or split long utterances")
        return x + self.pe[:t]


class ProbeHead(nn.Module):
    """Front end (standardise, mix layers, context) + one of ``HEADS``.

    ``config`` (stored in run.json as ``head_config``) fully determines the architecture:
    ``head``, ``shapes`` ([[layers, dim], ...] per stream), ``weighted`` (per stream),
    ``layer_norm``, ``context``, ``vocab``, ``dropout``.
    """

    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)
        head, shapes, vocab = config["head"], config["shapes"], int(config["vocab"])
        weighted = config["weighted"]
        k, dropout = int(config.get("context", 0)), float(config.get("dropout", 0.1))
        if head not in HEADS:
            raise ProbeError(f"run.json head_config: unknown head {head!r}; choose one of {', '.join(HEADS)}")
        if head == "gated" and len(shapes) != 2:
            raise ProbeError(f"--head gated mixes exactly 2 caches; got {len(shapes)} --features")
        self.head, self.context = head, k
        self.norms = nn.ModuleList(Standardize(l, d) for l, d in shapes)
        self.mixers = nn.ModuleList(LayerMixer(l, d, w, bool(config.get("layer_norm", False)))
                                    for (l, d), w in zip(shapes, weighted))
        dims = [m.out_dim * (2 * k + 1) for m in self.mixers]
        d_in = sum(dims)
        self.last_gate: torch.Tensor | None = None
        if head in ("linear", "weighted"):
            self.body = nn.Sequential(nn.Linear(d_in, PROJ_DIM), nn.Linear(PROJ_DIM, vocab))
        elif head == "mlp":
            self.body = nn.Sequential(nn.Linear(d_in, MLP_DIM), nn.ReLU(), nn.Dropout(dropout),
                                      nn.Linear(MLP_DIM, MLP_DIM), nn.ReLU(), nn.Dropout(dropout),
                                      nn.Linear(MLP_DIM, vocab))
        elif head == "transformer":
            self.proj = nn.Linear(d_in, PROJ_DIM)
            self.pos = SinusoidalPositions(PROJ_DIM)
            layer = ThreadStableEncoderLayer(PROJ_DIM, nhead=4, dim_feedforward=4 * PROJ_DIM, dropout=dropout,
                                             attention_dropout=dropout, batch_first=True, norm_first=True)
            self.encoder = thread_stable_layer_norms(nn.TransformerEncoder(layer, num_layers=2,
                                                                           enable_nested_tensor=False))
            self.out = nn.Sequential(ThreadStableLayerNorm(PROJ_DIM), nn.Linear(PROJ_DIM, vocab))
        else:  # gated
            self.proj_a, self.proj_b = nn.Linear(dims[0], PROJ_DIM), nn.Linear(dims[1], PROJ_DIM)
            self.gate = nn.Linear(d_in, 1)
            self.out = nn.Linear(PROJ_DIM, vocab)

    def set_standardization(self, stats: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """``[(mean (L, D), std (L, D)), ...]`` per stream, from the train split."""
        for norm, (mean, std) in zip(self.norms, stats):
            norm.mean.copy_(mean)
            norm.std.copy_(std)

    def set_blank_prior(self, p_blank: float) -> None:
        """Start the ``linear``/``weighted`` heads at the CTC blank prior: output bias = log prior with
        ``p_blank`` on blank and the rest spread evenly over the phones (other heads: unchanged).

        Why: with PyTorch's default init these heads start near-uniform and CTC drives them into a
        "frequent phone everywhere" plateau (train CTC ~12 nats/phone on the sample corpus with fbank)
        that a purely linear map leaves only after 40-90 epochs, long after early stopping (patience
        10) has ended training. Starting at the blank-dominated solution CTC converges to anyway
        removes the plateau (measured: train loss 3.9 after epoch 1, dev PER 84% -> ~40%).
        """
        if self.head not in ("linear", "weighted"):
            return
        out = self.body[-1]
        vocab = out.bias.shape[0]
        p = min(max(float(p_blank), 1e-3), 1 - 1e-3)
        with torch.no_grad():
            out.bias.fill_(math.log((1 - p) / (vocab - 1)))
            out.bias[0] = math.log(p)

    def layer_weights(self) -> list[list[float] | None]:
        return [m.weights() for m in self.mixers]

    def forward(self, streams: list[torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
        xs = [stack_context(mix(x, norm), self.context) for x, norm, mix in zip(streams, self.norms, self.mixers)]
        if self.head == "gated":
            g = torch.sigmoid(self.gate(torch.cat(xs, dim=-1)))  # (B, T, 1)
            self.last_gate = g.detach()[..., 0]
            h = g * self.proj_a(xs[0]) + (1 - g) * self.proj_b(xs[1])
            return F.log_softmax(self.out(h), dim=-1)
        x = torch.cat(xs, dim=-1) if len(xs) > 1 else xs[0]
        if self.head == "transformer":
            t = x.shape[1]
            pad = torch.arange(t, device=x.device)[None, :] >= lengths[:, None]  # True = padding
            h = self.encoder(self.pos(self.proj(x)), src_key_padding_mask=pad)
            return F.log_softmax(self.out(h), dim=-1)
        return F.log_softmax(self.body(x), dim=-1)
