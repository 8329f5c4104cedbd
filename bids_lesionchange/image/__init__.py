"""image layer of bids_lesionchange."""
