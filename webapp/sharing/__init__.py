"""Sharing an album: recipients (key slots), the share link, unlocking the real faces."""
