"""Publishing: model cards, data cards, ``nlp-ssl push`` and the engine's :class:`~nlp_ssl.hub.publish.Publisher`.

Modules: ``model_card`` (cards with model-index results), ``data_cards`` (cards of the training corpora),
``portable`` (command lines without local paths), ``compute`` (hardware and cost), ``upload`` (one atomic
commit per push), ``push`` (the CLI), ``publish`` (``HubConfig`` and uploads during training).
"""
