"""PyraTok: language-aligned pyramidal video tokenizer (`PyraTokModel`, `AutoencoderPyraTok`)."""

from transformers import AutoConfig, AutoModel

from .autoencoder_pyratok import AutoencoderPyraTok
from .configuration_prior import PyraTokARPriorConfig, PyraTokMaskedPriorConfig
from .configuration_pyratok import PRESETS, PyraTokConfig
from .modeling_pyratok import PyraTokModel, PyraTokOutput, PyraTokTokens
from .prior_ar import PyraTokARPrior
from .prior_layers import PyraTokPriorOutput, prior_from_pretrained
from .prior_masked import PyraTokMaskedPrior
from .text_encoder_pyratok import PyraTokTextEncoder
from .tokens_pyratok import PyraTokLevelIds, PyraTokTokenLayout

AutoConfig.register(PyraTokConfig.model_type, PyraTokConfig)
AutoModel.register(PyraTokConfig, PyraTokModel)

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "AutoencoderPyraTok",
    "PyraTokARPrior",
    "PyraTokARPriorConfig",
    "PyraTokConfig",
    "PyraTokLevelIds",
    "PyraTokMaskedPrior",
    "PyraTokMaskedPriorConfig",
    "PyraTokModel",
    "PyraTokOutput",
    "PyraTokPriorOutput",
    "PyraTokTextEncoder",
    "PyraTokTokenLayout",
    "PyraTokTokens",
    "prior_from_pretrained",
]
