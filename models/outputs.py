"""How the model modules return several outputs: a dict, or the reference's single value or tuple."""

from typing import Any


def pack_outputs(outs: dict[str, Any], as_dict: bool) -> Any:
    """Return ``outs`` as a dict, or as the reference's ``Result.as_return()`` did.

    That is: the single value when there is one, else a tuple in insertion order.
    """
    if as_dict:
        return outs
    values = tuple(outs.values())
    return values[0] if len(values) == 1 else values
