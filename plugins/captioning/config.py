"""Schemas of the captioning plug-in's choices, registered as ``schema/task/captioning`` and ``schema/model/cnn_lstm``.

Imported when the plug-in is activated (at every start of a command that sees it), so it imports nothing heavy.
"""

from dataclasses import dataclass, field

from omegaconf import MISSING


@dataclass
class CaptioningConfig:
    """Images with captions, laid out like a parallel corpus: ``{data}/{split}.img`` names one image file of
    ``{data}/{images}/`` per line, and line i of ``{data}/{split}.en`` is its caption (an image may repeat)."""

    _target_: str = "captioning.task.CaptioningTask"
    data: str = MISSING
    source_lang: str = "img"  # suffix of the image lists (runner.generate reads them as the source side)
    target_lang: str = "en"
    images: str = "images"  # image folder, relative to data
    image_size: int = 32  # every image is resized to image_size x image_size RGB
    data_bin: str = "data-bin/captions-${path_name:${task.data}}"  # sentencepiece model + dictionary
    splits: list[str] = field(default_factory=lambda: ["train", "valid", "test"])
    vocab_size: int = 150  # sentencepiece vocabulary trained on the train captions
    spm_model_type: str = "word"  # word | unigram | bpe


@dataclass
class CnnLstmConfig:
    """A CNN image encoder (3x3 stride-2 convolutions, global average pooling) feeding an LSTM decoder."""

    _target_: str = "captioning.model.CaptioningModel.build"
    channels: list[int] = field(default_factory=lambda: [16, 32, 64])  # one conv layer per entry
    embed_dim: int = 64  # word embeddings and the projected image feature
    hidden_dim: int = 128  # LSTM state size
    layers: int = 1  # LSTM layers
    dropout: float = 0.1
    max_target_positions: int = 64  # longest caption (tokens, </s> included)


SCHEMAS = {"task": {"captioning": CaptioningConfig}, "model": {"cnn_lstm": CnnLstmConfig}}
