"""Example plug-in: image captioning with a small CNN encoder whose image feature is an LSTM decoder's first input.

Files: ``config.py`` (schemas), ``task.py`` (data preparation, batches, building the model and criterion),
``dataset.py`` (images + captions, collated into runner's batch dictionary), ``model.py`` (encoder, decoder and the
incremental state that runner.generate's beam search drives), ``conf/`` (the YAML choices) and ``data/`` (16 images
bundled with scikit-image, with captions written for them).
"""
