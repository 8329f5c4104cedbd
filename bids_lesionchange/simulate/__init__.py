"""simulate layer of bids_lesionchange."""
