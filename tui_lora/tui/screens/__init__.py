"""The wizard's screens: one module per step, in the order the user meets them."""
