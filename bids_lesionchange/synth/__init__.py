"""synth layer of bids_lesionchange."""
