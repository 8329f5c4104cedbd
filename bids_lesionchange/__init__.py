"""bids_lesionchange: self-supervised detection of new and enlarging MS lesions (BIDS-App)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
