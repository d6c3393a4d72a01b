"""Albums, their key slots and photos: upload, the anonymization task, the album pages."""
