"""Model cards and the shipped demo checkpoint (`pyratok-small-procedural/`), installed as `pyratok.model_cards`
package data so that `pyratok reconstruct` finds its default model after a plain `pip install`."""
