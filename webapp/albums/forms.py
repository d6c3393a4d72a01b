from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import password_validation

MIN_PASSPHRASE = 8
MAX_PASSPHRASE = 512  # what the unlock dialog and its websocket take


def check_passphrase(value: str) -> str:
    """An album passphrase or a recipient's password, held to Django's password validators
    (length, common passwords, all digits), as an account password is; ValidationError if weak."""
    password_validation.validate_password(value)
    return value


class AlbumForm(forms.Form):
    name = forms.CharField(max_length=120, widget=forms.TextInput(attrs={"autofocus": True}))
    passphrase = forms.CharField(
        label="Album passphrase",
        min_length=MIN_PASSPHRASE,
        max_length=MAX_PASSPHRASE,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=(
            "Unlocks the real faces of this album. Veil never stores it and cannot reset it: "
            "without it the original faces are lost for good."
        ),
    )
    passphrase_again = forms.CharField(
        label="Passphrase again",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )

    def clean_passphrase(self) -> str:
        return check_passphrase(self.cleaned_data["passphrase"])

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        first, second = cleaned.get("passphrase"), cleaned.get("passphrase_again")
        if first and second and first != second:
            self.add_error("passphrase_again", "The two passphrases differ.")
        return cleaned


class AlbumNameForm(forms.Form):
    name = forms.CharField(label="Album name", max_length=120, error_messages={"required": "Give the album a name."})

    def clean_name(self) -> str:
        name = " ".join(self.cleaned_data["name"].split())
        if not name:
            raise forms.ValidationError("Give the album a name.")
        return name


class AlbumDeleteForm(forms.Form):
    confirm = forms.BooleanField(
        label="Delete this album, its photos and their real faces for good.",
        error_messages={"required": "Tick the box to confirm that everything in this album will be deleted."},
    )
