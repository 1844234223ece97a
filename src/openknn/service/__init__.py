"""The local SageMaker service: the layer above ``sdk/`` that will serve SageMaker's API, its
runtime and an embedded S3 store on one port (issue 12). It imports only from openknn's lower
layers; nothing below imports it. ``s3/`` is the embedded, file-backed S3 store."""
