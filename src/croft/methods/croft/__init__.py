"""CRoFT and the CE adapter: the adapter forward (``core``), their configs (``config``), the
batched steps (``steps``, the one implementation of each step), the engine that trains many
members at once (``engine``, ``chunk``; a single fit is a batch of one), the registered fits
(``fit``) and the fitted adapter head (``head``)."""
