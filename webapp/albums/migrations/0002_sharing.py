# Share links, album sharing settings, and expiry and last use of key slots.

from django.db import migrations, models

import webapp.albums.models


def give_each_album_a_share_token(apps, schema_editor):
    # A callable default runs once per AddField, not once per row: fill existing albums one by one.
    Album = apps.get_model("albums", "Album")
    for album in Album.objects.filter(share_token__isnull=True).only("pk"):
        album.share_token = webapp.albums.models.new_share_token()
        album.save(update_fields=["share_token"])


class Migration(migrations.Migration):
    dependencies = [
        ("albums", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="album",
            name="share_token",
            field=models.CharField(editable=False, max_length=64, null=True),
        ),
        migrations.RunPython(give_each_album_a_share_token, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="album",
            name="share_token",
            field=models.CharField(
                default=webapp.albums.models.new_share_token, editable=False, max_length=64, unique=True
            ),
        ),
        migrations.AddField(
            model_name="album",
            name="decoy_mode",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="album",
            name="downloads_include_envelope",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="albumkeyslot",
            name="expires_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="albumkeyslot",
            name="last_unlocked_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterModelOptions(
            name="albumkeyslot",
            options={"ordering": ["kind", "label"]},
        ),
        migrations.AddConstraint(
            model_name="albumkeyslot",
            constraint=models.UniqueConstraint(fields=("album", "label"), name="one_slot_per_name_per_album"),
        ),
    ]
