"""EdgeFER compression worker: trains, distils, prunes and exports EAN models (needs torch)."""
