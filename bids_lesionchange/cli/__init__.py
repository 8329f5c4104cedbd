"""cli layer of bids_lesionchange."""
