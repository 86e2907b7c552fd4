"""Data loaders: GLUE MRPC (glue.py) and IDX image sets such as Fashion-MNIST (images.py)."""
