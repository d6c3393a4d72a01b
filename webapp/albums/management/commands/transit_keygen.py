"""Print a new transit key pair for the environment of the web and worker processes."""

from __future__ import annotations

import base64
from typing import Any

from django.core.management.base import BaseCommand

from cipher_worker.keys import generate_album_keypair


class Command(BaseCommand):
    help = "Print a fresh VEIL_TRANSIT_PRIVATE_KEY (workers) and VEIL_TRANSIT_PUBLIC_KEY (web)."

    def handle(self, *args: Any, **options: Any) -> None:
        private, public = generate_album_keypair()
        self.stdout.write(f"VEIL_TRANSIT_PRIVATE_KEY={base64.b64encode(private).decode()}")
        self.stdout.write(f"VEIL_TRANSIT_PUBLIC_KEY={base64.b64encode(public).decode()}")
