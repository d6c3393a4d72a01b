"""Sign up, log in, log out (Django's auth with Veil's pages)."""
