"""Inference: search (beam, sampling), loading a checkpoint for it, input policies, and sacrebleu scoring."""
