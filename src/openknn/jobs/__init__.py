"""The training job and its I/O: channels, model files, the /opt/ml contract."""
