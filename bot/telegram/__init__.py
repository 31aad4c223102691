"""The Telegram relay: python-telegram-bot 22 in front of the Rasa server (`python -m bot relay`)."""
