"""M-CTC-T (speechbrain/m-ctc-t-large): cannot be loaded with transformers 5.

``MCTCTModel`` was deprecated in transformers 4.x and deleted in 5.0; phonecli requires
transformers >= 5, so this adapter refuses with one line naming the fix instead of falling
back to anything else. Extract it with ``transformers<5`` in a separate environment.
"""

from __future__ import annotations

import numpy as np

from phonecli.encoders.base import EncoderAdapter, ExtractionError, LayerInfo, ModelSpec


def removed_error(spec: ModelSpec, source: str) -> ExtractionError:
    import transformers

    return ExtractionError(
        f"{spec.name} ({source or spec.source}): transformers 5 removed MCTCT (installed: transformers "
        f"{transformers.__version__}); extract it with transformers<5 in a separate environment"
    )


class Adapter(EncoderAdapter):
    """Always raises :class:`ExtractionError` (the model class no longer exists)."""

    def __init__(self, spec: ModelSpec, source: str, *, revision: str | None = None,
                 device: str = "cpu", trust_remote_code: bool = False):
        super().__init__(spec, source, revision=revision, device=device, trust_remote_code=trust_remote_code)
        self.source = source
        raise removed_error(spec, source)

    # Unreachable through __init__; kept raising so a hand-built instance cannot yield data.
    def layers(self) -> list[LayerInfo]:
        raise removed_error(self.spec, self.source)

    def num_frames(self, num_samples: int) -> int:
        raise removed_error(self.spec, self.source)

    def forward(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        raise removed_error(self.spec, self.source)
