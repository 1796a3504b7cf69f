"""Reference implementations the tests (and bench/sweep.py) check the vectorised code against: straightforward
per-image loops, written for clarity, not speed."""

from __future__ import annotations

from whaleid.rule.predict import NEW


def naive_predictions(sims, neighbors, gallery_labels, fill, threshold):
    """Straightforward per-image reference: walk neighbours best first, insert new_individual, fill to five."""
    out = []
    for row_s, row_n in zip(sims, neighbors, strict=True):
        pairs = sorted([(s, n) for s, n in zip(row_s, row_n, strict=True) if n >= 0], key=lambda t: -t[0])
        preds: list[int] = []
        inserted = False
        for s, n in pairs:
            label = int(gallery_labels[n])
            if label in preds:
                continue
            if not inserted and s < threshold:
                preds.append(NEW)
                inserted = True
            if len(preds) < 5:
                preds.append(label)
            if len(preds) >= 5:
                break
        if not inserted and len(preds) < 5:
            preds.append(NEW)
        for f in fill:
            if len(preds) >= 5:
                break
            if f not in preds:
                preds.append(f)
        out.append(preds[:5])
    return out
