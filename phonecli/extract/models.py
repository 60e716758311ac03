"""What ``extract --model`` accepts: everything the encoder registry resolves, plus ``phonecli
finetune`` run directories (their fine-tuned encoder).

The fine-tuned case lives here, in the extract stage, because the encoder package
(``phonecli.encoders``) is used by fine-tuning and must never import it back.
"""

from __future__ import annotations

from pathlib import Path

from phonecli.encoders.base import EncoderAdapter, ModelSpec


def is_run_dir(model: str) -> bool:
    path = Path(model)
    return path.is_dir() and (path / "run.json").exists() and not (path / "config.json").exists()


def resolve_model(model: str) -> tuple[ModelSpec, str]:
    """``(spec, source)``: a registry name / save_pretrained directory / NAME=DIR (see
    :func:`phonecli.encoders.registry.resolve`), or a fine-tuning run: the base model's row named
    after the run, with ``extra["finetune_run"]``."""
    if is_run_dir(model):
        from phonecli.finetune.export import run_spec

        return run_spec(model)
    from phonecli.encoders.registry import resolve

    return resolve(model)


def load_encoder(model: str, *, revision: str | None = None, device: str = "cpu",
                 trust_remote_code: bool = False) -> EncoderAdapter:
    """The loaded adapter for ``model`` (any form :func:`resolve_model` accepts)."""
    if is_run_dir(model):
        from phonecli.finetune.export import load_finetuned_adapter

        return load_finetuned_adapter(model, device=device)
    from phonecli.encoders.registry import get_adapter

    return get_adapter(model, revision=revision, device=device, trust_remote_code=trust_remote_code)
