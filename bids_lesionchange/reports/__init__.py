"""reports layer of bids_lesionchange."""
