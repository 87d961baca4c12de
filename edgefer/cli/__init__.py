"""The torch-free command-line applications on top of the protocol packages: `edgefer-registry` (with its
`rollout` commands), `edgefer-jobs` and `edgefer-classify`. They import the protocol; the protocol never imports them."""
