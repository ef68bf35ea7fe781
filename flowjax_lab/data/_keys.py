"""Conversion of legacy and new-style `jax.random` keys to typed keys."""

import jax
import jax.numpy as jnp


def as_key(key: jax.Array) -> jax.Array:
    """Returns `key` as a typed PRNG key array.

    Accepts new-style keys (`jax.random.key(0)`, dtype `key<impl>`) unchanged, and wraps legacy
    raw keys (`jax.random.PRNGKey(0)`, a uint32 array of shape (..., 2)) with
    `jax.random.wrap_key_data`. Both spellings of the same seed give the same random numbers.

    Args:
      key: a typed key or a raw uint32 key array.

    Returns:
      A typed key array of the same batch shape.
    """
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if key.dtype != jnp.uint32:
        raise ValueError(f"expected a jax.random key (typed, or raw uint32), got dtype {key.dtype}")
    return jax.random.wrap_key_data(key)
