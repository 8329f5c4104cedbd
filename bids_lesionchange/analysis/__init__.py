"""analysis layer of bids_lesionchange."""
