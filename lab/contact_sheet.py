"""The contact sheet of an evaluation: per face, the original beside its strangers under a few
keys, so anyone can judge the looks by eye (written as ``looks.png`` beside the report)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

SHEET_NAME = "looks.png"
SHEET_TILE = 128
SHEET_COLUMNS = 3
SHEET_KEYS = 3


def contact_rows(
    original: np.ndarray, boxes: Sequence[tuple[float, float, float, float]], versions: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """Per face box (x, y, w, h): the original | the first :data:`SHEET_KEYS` anonymized versions,
    square tiles of the face and what surrounds it (1.6 × its box), as (T, 4T, 3) uint8 rows."""
    rows = []
    height, width = original.shape[:2]
    for x, y, w, h in boxes:
        side = 1.6 * max(w, h)
        x0, y0 = int(max(x + w / 2 - side / 2, 0)), int(max(y + h / 2 - side / 2, 0))
        x1, y1 = int(min(x0 + side, width)), int(min(y0 + side, height))
        images = [original, *versions[:SHEET_KEYS]]
        tiles = [cv2.resize(im[y0:y1, x0:x1], (SHEET_TILE, SHEET_TILE), interpolation=cv2.INTER_AREA) for im in images]
        rows.append(np.concatenate(tiles, axis=1))
    return rows


def contact_sheet(rows: list[np.ndarray]) -> np.ndarray:
    """Face rows laid out in :data:`SHEET_COLUMNS` columns on white, (H, W, 3) uint8."""
    if not rows:
        return np.full((SHEET_TILE, 4 * SHEET_TILE, 3), 255, np.uint8)
    per_column = -(-len(rows) // SHEET_COLUMNS)
    gap = SHEET_TILE // 8
    columns = []
    for c in range(SHEET_COLUMNS):
        chunk = rows[c * per_column : (c + 1) * per_column]
        chunk += [np.full_like(rows[0], 255)] * (per_column - len(chunk))
        column = np.concatenate([np.pad(r, ((0, 4), (0, 0), (0, 0)), constant_values=255) for r in chunk])
        columns.append(np.pad(column, ((0, 0), (0, gap), (0, 0)), constant_values=255))
    return np.concatenate(columns, axis=1)
