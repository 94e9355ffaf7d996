"""Datasets on disk: folder layouts (CamVid, DAVIS, extracted), bag extraction, label import, variants."""
