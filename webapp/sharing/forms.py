from __future__ import annotations

import datetime
from typing import Any, ClassVar

from django import forms
from django.utils import timezone

from webapp.albums.forms import MAX_PASSPHRASE, MIN_PASSPHRASE, check_passphrase
from webapp.albums.models import Album, AlbumKeySlot

from .passphrases import generate_passphrase
from .recipients import SharingError, TooManyTries, add_recipient


def _owner_passphrase_field() -> forms.CharField:
    return forms.CharField(
        label="Your album passphrase",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        help_text="Needed to hand the album's key to someone else; Veil does not keep it.",
        error_messages={"required": "Type your album passphrase."},
    )


MAX_EXPIRY_DAYS = 100 * 366


def end_of_day(day: datetime.date) -> datetime.datetime:
    """Access "until 5 March" lasts to the end of that day (in the site's time zone)."""
    start = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time())
    return timezone.make_aware(start)


class ExpiryField(forms.DateField):
    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.DateInput(attrs={"type": "date"}))
        super().__init__(**kwargs)

    def validate(self, value: Any) -> None:
        super().validate(value)
        if value and value < timezone.localdate():
            raise forms.ValidationError("Choose today or a later day.")
        if value and value > timezone.localdate() + datetime.timedelta(days=MAX_EXPIRY_DAYS):
            raise forms.ValidationError("Choose a day within the next 100 years, or leave it empty for no end.")


class RecipientForm(forms.Form):
    GENERATE, CHOOSE = "generate", "choose"

    name = forms.CharField(
        max_length=120,
        error_messages={"required": "Give this person a name."},
        help_text="How this person finds themselves in the “Show real faces” list, e.g. “Grandma”.",
    )
    password_choice = forms.ChoiceField(
        label="Their password",
        choices=[(GENERATE, "Make one for me (shown once)"), (CHOOSE, "I will choose it")],
        initial=GENERATE,
        widget=forms.RadioSelect,
    )
    password = forms.CharField(
        label="Password you choose",
        required=False,
        strip=False,
        min_length=MIN_PASSPHRASE,
        max_length=MAX_PASSPHRASE,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=f"At least {MIN_PASSPHRASE} characters, not a common one. Give it to them yourself; "
        "Veil never shows it again.",
    )
    expires_on = ExpiryField(label="Access until (optional)", help_text="Leave empty for access until you remove it.")
    owner_passphrase = _owner_passphrase_field()

    def __init__(self, *args: Any, album: Album, client: str, **kwargs: Any) -> None:
        """``client``: the address the album passphrase is typed at, for its try limit."""
        super().__init__(*args, **kwargs)
        self.album, self.client = album, client
        self.too_many_tries = False

    def clean_password(self) -> str:
        password = self.cleaned_data.get("password") or ""
        return check_passphrase(password) if password else password

    def clean_name(self) -> str:
        name = " ".join(self.cleaned_data["name"].split())
        if not name:
            raise forms.ValidationError("Give this person a name.")
        if name.casefold() == AlbumKeySlot.OWNER_LABEL:
            raise forms.ValidationError("“owner” is the album owner's own name here; choose another.")
        if self.album.key_slots.filter(label__iexact=name).exists():
            raise forms.ValidationError("Someone of that name can already unlock this album.")
        return name

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        chosen = cleaned.get("password_choice") == self.CHOOSE
        if chosen and not cleaned.get("password") and not self.has_error("password"):
            self.add_error("password", "Type the password you want them to use.")
        return cleaned

    @property
    def expires_at(self) -> datetime.datetime | None:
        day = self.cleaned_data.get("expires_on")
        return end_of_day(day) if day else None

    def add_recipient(self) -> tuple[AlbumKeySlot, str | None] | None:
        """The new slot and, if Veil made the password, that password (to show once); None when
        the album passphrase is wrong, which is then this form's error."""
        generated = self.cleaned_data["password_choice"] == self.GENERATE
        password = generate_passphrase() if generated else self.cleaned_data["password"]
        try:
            slot = add_recipient(
                self.album,
                owner_passphrase=self.cleaned_data["owner_passphrase"],
                client=self.client,
                name=self.cleaned_data["name"],
                password=password,
                expires_at=self.expires_at,
            )
        except SharingError as exc:
            self.too_many_tries = isinstance(exc, TooManyTries)
            self.add_error("owner_passphrase", str(exc))
            return None
        return slot, password if generated else None


class ExpiryForm(forms.Form):
    expires_on = ExpiryField(label="Access until")


class AlbumSettingsForm(forms.ModelForm):
    class Meta:
        model = Album
        fields = ("decoy_mode", "downloads_include_envelope")
        labels: ClassVar[dict[str, str]] = {
            "decoy_mode": "Decoy mode",
            "downloads_include_envelope": "Downloads carry the recovery data",
        }
        help_texts: ClassVar[dict[str, str]] = {
            "decoy_mode": (
                "A wrong password shows plausible wrong faces instead of an error. That hides a failed "
                "try from someone watching a screen, or guessing once or twice. It cannot hide it from a "
                "determined guesser: wrong tries still run out after a few (a right password never does), "
                "and a careful look (or a stopwatch) tells the generated faces of a decoy from real photographs. Every "
                "wrong try is still listed below."
            ),
            "downloads_include_envelope": (
                "A downloaded photo then carries its sealed recovery data, so the file alone and a key "
                "bring the real faces back (with Veil's command line). Off: downloads are anonymized only."
            ),
        }


class RotateKeyForm(forms.Form):
    owner_passphrase = _owner_passphrase_field()

    def __init__(self, *args: Any, stranded: list[str], **kwargs: Any) -> None:
        """``stranded``: recipients a rotation removes (see recipients.stranded_recipients); the
        owner ticks a box to agree when there are any."""
        super().__init__(*args, **kwargs)
        self.stranded = stranded
        if stranded:
            names = ", ".join(stranded)
            self.fields["confirm"] = forms.BooleanField(
                label=f"I understand that {names} will be removed and must be added again.",
                error_messages={"required": f"Tick the box to confirm that {names} will be removed."},
            )
