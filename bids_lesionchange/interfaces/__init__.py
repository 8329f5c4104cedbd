"""interfaces layer of bids_lesionchange."""
