"""workflows layer of bids_lesionchange."""
