"""PyraTok training: synthetic shards, streaming clips, losses and the training loop (not shipped as remote code)."""
