"""Data: reading raw text safely, sentencepiece, binarization, datasets and batching."""
