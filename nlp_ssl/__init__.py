"""nlp_ssl: self-supervised pretraining of representations on the Hugging Face stack."""

__version__ = "0.1.0"
