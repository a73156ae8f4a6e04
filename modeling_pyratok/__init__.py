"""PyraTok: language-aligned pyramidal video tokenizer (`PyraTokModel`, `AutoencoderPyraTok`)."""

from transformers import AutoConfig, AutoModel

from .autoencoder_pyratok import AutoencoderPyraTok
from .configuration_pyratok import PRESETS, PyraTokConfig
from .modeling_pyratok import PyraTokModel, PyraTokOutput, PyraTokTokens
from .text_encoder_pyratok import PyraTokTextEncoder
from .tokens_pyratok import PyraTokLevelIds, PyraTokTokenLayout

AutoConfig.register(PyraTokConfig.model_type, PyraTokConfig)
AutoModel.register(PyraTokConfig, PyraTokModel)

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "AutoencoderPyraTok",
    "PyraTokConfig",
    "PyraTokLevelIds",
    "PyraTokModel",
    "PyraTokOutput",
    "PyraTokTextEncoder",
    "PyraTokTokenLayout",
    "PyraTokTokens",
]
