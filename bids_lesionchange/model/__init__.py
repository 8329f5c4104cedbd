"""model layer of bids_lesionchange."""
