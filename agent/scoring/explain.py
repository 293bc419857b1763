"""Reasons explained away: a reason that another, better-evidenced cause accounts for is dropped.

Each test reads one symptom, and some symptoms have more than one cause. Where a second test
gives positive evidence *against* the reason's own cause and a reason for the real one fires,
the policy drops the reason (from the verdict and from its tamper alarm):

* ``covered`` is dropped where ``moved`` applies and its p_family is above ``clear_alpha``
  (the calibrated view's edges are all there) and any other reason fires: a 15 % exposure or a
  veil is as flat as a hand over the lens, but a cover hides the view;
* ``blur`` is dropped where ``defocused`` applies and its p_family is above ``clear_alpha`` (no
  tile lost detail) and ``glare``, ``overexposed`` or ``occluded`` fires: light added over the
  view (a flare's halo) raises the frame's variance and not its Laplacian energy, and a flat
  occluder replaces detail with nothing, which both lower the frame-wide ratio ``blur`` reads;
  ``defocused`` compares each unclipped tile's detail (its median tile) and is not fooled.

A reason is also dropped where another makes it meaningless (``_SUPERSEDED``): ``occluded``
(part of the calibrated view hidden, the rest intact) where ``covered`` (all of it hidden),
``moved`` (the view is elsewhere: pixel positions no longer correspond) or ``defocused`` (every
tile lost detail: a blur or a starved encoder flattens texture everywhere, as ImageNet-C JPEG
s3-s5 does) fires; ``warped`` (the view's fine structure displaced place by place, warp.py)
where ``covered``, ``moved``, ``occluded`` or ``defocused`` fires (a view hidden, elsewhere or
blurred as a whole fails the structure comparison too, and is better named by those) or
``dark``, ``low_contrast``, ``overexposed``, ``glare`` or ``noise`` does: fewer code values per unit
of structure (a dim, flattened or washed-out view, ImageNet-C ``contrast``, ``brightness``) or
added noise (``snow``, sensor gain) leave part of each block's variance unexplained without
anything having moved.

Without the evidence (no thumbnail for ``moved``, ``defocused`` disabled or not applicable)
nothing is dropped. A reason is dropped only where another fires, so every FLAG still names a
reason, and the decision stays what it was (a BLOCK the dropped reason carried stays on the
frame: the evidence is as strong, only its name changed): the family-wise rates are unchanged.

>>> sorted(explained_away({"covered": 0.001, "moved": 1.0, "dark": 0.001}, 0.01, 0.1))
['covered']
>>> sorted(explained_away({"covered": 0.001, "moved": 0.002, "dark": 0.001}, 0.01, 0.1))  # the view is gone
[]
>>> sorted(explained_away({"covered": 0.001, "dark": 0.001}, 0.01, 0.1))  # no thumbnail: cannot tell
[]
>>> sorted(explained_away({"blur": 0.001, "defocused": 1.0, "glare": 0.001}, 0.01, 0.1))
['blur']
>>> sorted(explained_away({"blur": 0.001, "defocused": 0.05, "glare": 0.001}, 0.01, 0.1))  # tiles lost detail too
[]
>>> sorted(explained_away({"blur": 0.001, "defocused": 1.0, "ood_stats": 0.001}, 0.01, 0.1))  # no light to blame
[]
>>> sorted(explained_away({"blur": 0.001, "defocused": 1.0, "occluded": 0.001}, 0.01, 0.1))  # a sticker
['blur']
>>> sorted(explained_away({"occluded": 0.001, "covered": 0.001, "moved": 0.001}, 0.01, 0.1))  # a hand
['occluded']
>>> sorted(explained_away({"warped": 0.001, "moved": 0.001}, 0.01, 0.1))  # a camera turned away
['warped']
>>> sorted(explained_away({"warped": 0.001, "low_contrast": 0.002}, 0.01, 0.1))  # fog: fewer code values
['warped']
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["explained_away"]

#: reason -> (the test whose quiet rules out the reason's own cause, reasons of which one must fire; empty: any)
_RULES: dict[str, tuple[str, frozenset[str]]] = {
    "covered": ("moved", frozenset()),
    "blur": ("defocused", frozenset({"glare", "overexposed", "occluded"})),
}
#: reason -> the reasons that make it meaningless where they fire (the reason is dropped then)
_SUPERSEDED: dict[str, tuple[str, ...]] = {
    "occluded": ("covered", "moved", "defocused"),
    "warped": ("covered", "moved", "occluded", "defocused", "dark", "low_contrast", "overexposed", "glare", "noise"),
}


def explained_away(p_family: Mapping[str, float], alpha_flag: float, clear_alpha: float) -> set[str]:
    """The reasons of a frame to drop (module docstring); ``p_family``: reason -> F(p) of its test."""
    out: set[str] = set()
    for reason, (witness, causes) in _RULES.items():
        p, p_witness = p_family.get(reason), p_family.get(witness)
        if p is None or p_witness is None or p > alpha_flag or p_witness <= clear_alpha:
            continue
        others = (code for code, q in p_family.items() if q <= alpha_flag and code != reason)
        if any(not causes or code in causes for code in others):
            out.add(reason)
    for reason, overriding in _SUPERSEDED.items():
        p = p_family.get(reason)
        if p is None or p > alpha_flag:
            continue
        # the overriding reason stays on the frame to name the event (unless itself explained away)
        if any(p_family.get(code, 1.0) <= alpha_flag and code not in out for code in overriding):
            out.add(reason)
    return out
